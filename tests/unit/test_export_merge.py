"""Merging a LoRA trained on a base held in bfloat16 (model.dtype bfloat16 / auto): the merge is done in float32."""
from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoTokenizer

from tests.tiny_models import TOKENIZER_DIR, build_tiny_model
from tuneforge.export.merge import merge_and_save


def _bf16_lora():
    torch.manual_seed(0)
    base = build_tiny_model().to(torch.bfloat16)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero: give the adapter a small, real delta
                param.normal_(std=1e-3)
    return model


def test_a_bf16_base_is_merged_in_float32_and_the_check_passes(tmp_path):
    model = _bf16_lora()
    assert model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight.dtype == torch.bfloat16
    assert model.get_base_model().model.layers[0].self_attn.q_proj.lora_A["default"].weight.dtype == torch.float32
    layer = model.get_base_model().model.layers[0].self_attn.q_proj
    expected = layer.base_layer.weight.float() + layer.get_delta_weight("default").float()

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    result = merge_and_save(model, tokenizer, tmp_path / "merged")

    merged = result["model"]
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    # The delta is kept whole: the bf16 weight plus the float32 delta, not their sum rounded to bf16.
    torch.testing.assert_close(merged.model.layers[0].self_attn.q_proj.weight, expected, rtol=0, atol=1e-7)
    assert result["max_abs_logit_diff_vs_adapter"] <= 1e-4
    assert (tmp_path / "merged" / "model.safetensors").is_file()


def test_rounding_the_merge_to_bf16_would_lose_the_delta():
    """Why the upcast: the same delta added in bf16 loses most of itself (what merge_and_unload does in place)."""
    model = _bf16_lora()
    layer = model.get_base_model().model.layers[0].self_attn.q_proj
    weight, delta = layer.base_layer.weight.detach(), layer.get_delta_weight("default").detach()
    in_bf16 = (weight + delta.to(torch.bfloat16)).float() - weight.float()
    error = float((in_bf16 - delta.float()).abs().mean() / delta.float().abs().mean())
    assert error > 0.05  # here about a tenth of the delta's magnitude is rounding error (0.75 logits on the quickstart)
