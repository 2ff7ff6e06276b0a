"""QLoRA on CPU: 4-bit NF4 + double quant loads, and LoRA gradients stay exact after an evaluation forward.

The reference is the same network computed in plain fp32: every Linear4bit replaced by an nn.Linear holding its
dequantised weight, identical LoRA weights, the same batch. Without tuneforge.integrations.bnb's workaround,
bitsandbytes repacks the weights on the first no-grad eval forward and the gradients silently diverge.
"""
from __future__ import annotations

import pytest
import torch

from tests.tiny_models import build_tiny_model
from tuneforge.config.schema import MethodConfig
from tuneforge.integrations.bnb import dequantized_weight, keep_cpu_4bit_gradients_exact, linear4bit_modules
from tuneforge.methods import get_method
from tuneforge.models.sources import ResolvedModel

# Dropout off so the quantised model and its reference see the very same LoRA branch.
CONFIG = MethodConfig(name="qlora", lora={"dropout": 0.0})


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny4bit") / "model"
    build_tiny_model().save_pretrained(path)
    return path


def qlora_model(tiny_dir):
    method = get_method(CONFIG)
    model = method.apply(method.load_base(ResolvedModel("tiny", "folder", str(tiny_dir), None)))
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # non-zero B, so gradients flow into every A through the frozen 4-bit layers
            torch.nn.init.normal_(param, std=0.1)
    return model


def dequantised_reference(qmodel):
    """fp32 twin of `qmodel`: dequantised base weights, the same embeddings/norms and the same LoRA weights."""
    reference_base = build_tiny_model()
    qbase = qmodel.get_base_model()
    with torch.no_grad():
        for name, module in qbase.named_modules():
            if type(module).__name__ == "Linear4bit":
                reference_base.get_submodule(name.replace(".base_layer", "")).weight.copy_(dequantized_weight(module))
        reference_params = dict(reference_base.named_parameters())
        for name, param in qbase.named_parameters():
            if "lora_" not in name and param.dtype.is_floating_point and name in reference_params:
                reference_params[name].copy_(param)
    reference = get_method(MethodConfig(name="lora", lora={"dropout": 0.0})).apply(reference_base)
    reference.load_state_dict({k: v for k, v in qmodel.state_dict().items() if "lora_" in k}, strict=False)
    return reference


def lora_grads(model):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 49152, (2, 12), generator=generator)
    model.train()
    model.zero_grad()
    model(input_ids=ids, labels=ids).loss.backward()
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def eval_forward(model):
    model.eval()
    model(input_ids=torch.tensor([[5, 6, 7, 8]]))


def assert_grads_match(actual, expected):
    assert actual.keys() == expected.keys() and len(actual) == 16  # A and B of q, k, v, o in 2 layers
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-3, atol=1e-6, msg=name)


def test_loads_nf4_double_quant_and_computes_in_fp32(tiny_dir):
    model = qlora_model(tiny_dir)
    layers = linear4bit_modules(model)
    assert len(layers) == 2 * 7  # q, k, v, o, gate, up, down in both blocks
    for layer in layers:
        assert layer.weight.quant_state.quant_type == "nf4"
        assert layer.weight.quant_state.nested  # double quantisation: the block scales are quantised too
        assert layer.compute_dtype == torch.float32
        assert layer.support_avx512bf16_for_cpu is False


def test_lora_gradients_exact_after_eval_forward(tiny_dir):
    model = qlora_model(tiny_dir)
    reference = dequantised_reference(model)
    eval_forward(model)  # what generate / evaluation do before and between training steps
    eval_forward(reference)
    assert not any(getattr(layer.weight.quant_state, "packing_format_for_cpu", False)
                   for layer in linear4bit_modules(model))
    assert_grads_match(lora_grads(model), lora_grads(reference))


def test_workaround_undoes_a_repack_that_already_happened(tiny_dir):
    """Late application restores exact gradients, but bnb's repack rounded the block scales to bf16 and its
    inverse re-quantises them, so the base weights drift slightly: hence load_base applies it before any forward."""
    model = qlora_model(tiny_dir)
    original = [dequantized_weight(layer).clone() for layer in linear4bit_modules(model)]
    for layer in linear4bit_modules(model):
        layer.support_avx512bf16_for_cpu = True  # as bnb constructs it on an AVX512-BF16 CPU
    eval_forward(model)
    keep_cpu_4bit_gradients_exact(model)
    assert not any(getattr(layer.weight.quant_state, "packing_format_for_cpu", False)
                   for layer in linear4bit_modules(model))
    drift = max(float(((dequantized_weight(layer) - w).abs().max() / w.abs().max()))
                for layer, w in zip(linear4bit_modules(model), original))
    assert drift < 1e-2  # bf16-level rounding of the scales, not garbage
    assert_grads_match(lora_grads(model), lora_grads(dequantised_reference(model)))


def test_upstream_repack_still_breaks_gradients_without_workaround(tiny_dir):
    """Canary for the upstream behaviour: if this starts failing, bnb fixed it and the workaround can go."""
    from bitsandbytes.functional import has_avx512bf16

    if not has_avx512bf16():
        pytest.skip("bnb only repacks weights on CPUs with AVX512-BF16")
    model = qlora_model(tiny_dir)
    reference = dequantised_reference(model)
    for layer in linear4bit_modules(model):
        layer.support_avx512bf16_for_cpu = True
    eval_forward(model)
    with pytest.warns(UserWarning, match="autograd kernel was not registered"):
        actual = lora_grads(model)
    expected = lora_grads(reference)
    assert max(float((actual[n] - expected[n]).abs().max()) for n in expected) > 1e-3


def test_adapter_is_plain_lora_and_merges_into_dequantised_weights(tiny_dir, tmp_path):
    model = qlora_model(tiny_dir)
    method = get_method(CONFIG)
    method.save_adapter(model, tmp_path / "adapter")
    import json

    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "LORA" and saved["r"] == 16 and saved["lora_alpha"] == 32
    reference = dequantised_reference(model)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    merged = method.merged_model(model)
    assert getattr(merged.config, "quantization_config", None) is None
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, reference.eval()(input_ids=ids).logits,
                                   atol=1e-4, rtol=0)
