"""One conformance suite that every method passes, on the tiny 2-layer Llama (hidden 64, kv dim 32, MLP 128).

Per method: trainable-parameter count (hand-counted where the shape is simple), only the method's parameters
change in training, output unchanged at init where promised, save -> load round trip, merged == unmerged,
and the base comes back under base_context for adapter methods.
"""
from __future__ import annotations

import copy

import pytest
import torch

from tests.tiny_models import build_tiny_model
from tuneforge.config.schema import MethodConfig
from tuneforge.errors import ConfigError
from tuneforge.methods import METHODS, get_method
from tuneforge.models.sources import ResolvedModel

# Hand counts on the tiny config: hidden 64, 4 heads of 16 (q/o: 64x64), 2 kv heads (k/v: 64->32), MLP 64<->128,
# 2 layers, r=16. LoRA adds r*(in+out) per module; DoRA adds a magnitude per output feature.
LORA_QKVO = 2 * 16 * ((64 + 64) + (64 + 32) + (64 + 32) + (64 + 64))  # 14336
DORA_MAGNITUDES = 2 * (64 + 32 + 32 + 64)  # 384
LORA_MLP = 2 * 16 * ((64 + 128) * 3)  # gate, up, down: 18432
IA3 = 2 * (32 + 32 + 128)  # k, v (output scales) + down_proj (input scale, feed-forward): 384
BLOCK = 64 * 64 * 2 + 64 * 32 * 2 + 64 * 128 * 3 + 2 * 64  # attention + MLP + 2 RMSNorms: 36992
NORMS = 2 * 2 * 64 + 64  # two norms per block + final norm: 320
PROMPT = 16 * 64  # 16 virtual tokens x hidden

CASES = {
    # id: (method config, hand-counted trainable params or None, promises identity at init)
    "full": ({"name": "full"}, None, True),
    "lora": ({"name": "lora"}, LORA_QKVO, True),
    "lora-rslora": ({"name": "lora", "lora": {"use_rslora": True}}, LORA_QKVO, True),
    "lora-dora": ({"name": "lora", "lora": {"use_dora": True}}, LORA_QKVO + DORA_MAGNITUDES, True),
    "lora-attention-preset": ({"name": "lora", "lora": {"target": "attention"}}, LORA_QKVO, True),
    "lora-all-linear": ({"name": "lora", "lora": {"target": "all-linear"}}, LORA_QKVO + LORA_MLP, True),
    "qlora": ({"name": "qlora"}, LORA_QKVO, True),
    "ia3": ({"name": "ia3"}, IA3, True),
    "prefix-changes-output-at-init": ({"name": "prefix"}, None, False),
    "prompt-changes-output-at-init": ({"name": "prompt"}, PROMPT, False),
    "freeze-last-block": ({"name": "freeze", "freeze": {"train_last_n_blocks": 1}}, BLOCK, True),
    "freeze-norms": ({"name": "freeze", "freeze": {"train": ["biases", "norms"]}}, NORMS, True),
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "model"
    build_tiny_model().save_pretrained(path)
    return path


def load_base(method, tiny_dir):
    # QLoRA's base must be loaded 4-bit from a folder; the others get the very same weights in fp32.
    return method.load_base(ResolvedModel(source="tiny", kind="folder", path=str(tiny_dir), weights_sha256=None))


def batch():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 49152, (2, 10), generator=generator)
    return ids, torch.ones_like(ids)


@torch.no_grad()
def logits(model):
    ids, mask = batch()
    was_training = model.training
    model.eval()
    # Prompt tuning returns logits for its virtual tokens too; compare the real positions only.
    out = model(input_ids=ids, attention_mask=mask).logits[:, -ids.shape[1]:].float()
    model.train(was_training)
    return out


def train_steps(model, steps=3, lr=1e-2):
    ids, mask = batch()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return float(loss.detach())


def snapshot(model):
    return {name: param.detach().clone() for name, param in model.named_parameters()}


def test_every_registered_method_is_covered():
    assert {spec["name"] for spec, _, _ in CASES.values()} == set(METHODS)


@pytest.mark.parametrize("case", list(CASES))
def test_method_conformance(case, tiny_dir, tmp_path):
    spec, hand_count, identity_at_init = CASES[case]
    method = get_method(MethodConfig(**spec))
    base = load_base(method, tiny_dir)
    base_logits = logits(base)

    model = method.apply(base)
    report = method.trainable_parameters(model)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert report["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    if hand_count is not None:
        assert report["trainable"] == hand_count
    if method.name == "qlora":  # packed 4-bit weights are counted at their logical size
        assert report["total"] == sum(p.numel() for p in build_tiny_model().parameters()) + report["trainable"]

    # Output at init: identical where the method promises it; prefix/prompt must visibly act from the start.
    init_logits = logits(model)
    if identity_at_init:
        torch.testing.assert_close(init_logits, base_logits, atol=1e-5, rtol=0)
    else:
        assert (init_logits - base_logits).abs().max() > 1e-3

    # Only the method's parameters change.
    before = snapshot(model)
    train_steps(model)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert changed == trainable, (f"changed-but-frozen: {changed - trainable}; "
                                  f"trainable-but-unchanged: {trainable - changed}")
    tuned_logits = logits(model)
    assert (tuned_logits - base_logits).abs().max() > 1e-4

    if method.has_adapter:
        # The base comes back without a second copy, after training too.
        with method.base_context(model):
            torch.testing.assert_close(logits(model), base_logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(logits(model), tuned_logits, atol=0, rtol=0)

        # Save -> load onto a fresh base gives the same outputs.
        from peft import PeftModel

        assert method.save_adapter(model, tmp_path / "adapter") is True
        assert (tmp_path / "adapter" / "adapter_config.json").is_file()
        reloaded = PeftModel.from_pretrained(load_base(method, tiny_dir), tmp_path / "adapter")
        torch.testing.assert_close(logits(reloaded), tuned_logits, atol=1e-5, rtol=0)
    else:
        assert method.save_adapter(model, tmp_path / "adapter") is False

    if not method.can_merge:
        with pytest.raises(ConfigError, match="cannot be merged"):
            method.merged_model(model)
        return
    merged = method.merged_model(model)
    assert type(merged).__name__ == "LlamaForCausalLM"
    assert all(type(m).__name__ != "Linear4bit" for m in merged.modules())
    torch.testing.assert_close(logits(merged), tuned_logits, atol=1e-4, rtol=0)

    # The merged model is a plain folder that transformers loads alone (for full/freeze: the trained model).
    from transformers import AutoModelForCausalLM

    merged.save_pretrained(tmp_path / "merged")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    torch.testing.assert_close(logits(plain), tuned_logits, atol=1e-4, rtol=0)


def test_lora_target_presets_pick_modules_by_structure(tiny_model):
    from tuneforge.methods.lora import attention_module_names

    assert attention_module_names(tiny_model) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    method = get_method(MethodConfig(name="lora", lora={"target": "all-linear"}))
    adapted = {name.split(".")[-4] for name, _ in method.apply(tiny_model).named_parameters() if "lora_A" in name}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_rslora_scales_by_sqrt_rank(tiny_model):
    model = get_method(MethodConfig(name="lora", lora={"use_rslora": True, "r": 16, "alpha": 32})).apply(tiny_model)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.scaling["default"] == pytest.approx(32 / 16 ** 0.5)


def test_config_errors_name_the_option(tiny_model):
    from pydantic import ValidationError

    with pytest.raises(ConfigError, match="method.lora.target_modules"):
        get_method(MethodConfig(name="lora", lora={"target_modules": ["query"]})).apply(copy.deepcopy(tiny_model))
    with pytest.raises(ValidationError, match="either target"):
        MethodConfig(name="lora", lora={"target": "attention", "target_modules": ["q_proj"]})
    with pytest.raises(ValidationError, match="trains nothing"):
        MethodConfig(name="freeze")
    with pytest.raises(ConfigError, match="has 2 blocks"):
        get_method(MethodConfig(name="freeze", freeze={"train_last_n_blocks": 3})).apply(copy.deepcopy(tiny_model))
    # Llama has no biases: biases alone select nothing, which must be an error rather than a silent no-op.
    with pytest.raises(ConfigError, match="selects no parameter"):
        get_method(MethodConfig(name="freeze", freeze={"train": ["biases"]})).apply(tiny_model)


def test_default_learning_rates_follow_the_method():
    from tuneforge.config.schema import RunConfig

    rates = {name: RunConfig(data={"train": "a.jsonl"}, method={"name": name, **(
        {"freeze": {"train": ["norms"]}} if name == "freeze" else {})}).effective_learning_rate() for name in METHODS}
    assert rates["lora"] == rates["qlora"] == 2e-4 and rates["full"] == 1e-5
    assert rates["ia3"] > rates["lora"] and rates["prompt"] > rates["lora"]
