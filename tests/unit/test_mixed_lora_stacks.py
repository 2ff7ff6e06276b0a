"""Stacked mixed-adapter LoRA batches (integrations/peft_mixed_lora.py): the same logits as PEFT's own mixed path and
as every row alone, the same greedy answers, stacks that follow adapter loads and removals (also through the
server's LRU pool), the new path really taken, and PEFT's path kept for what it does not cover."""
from __future__ import annotations

import pytest
import torch

from tests.serve_helpers import tiny_adapter
from tests.tiny_models import build_tiny_model
from tuneforge.integrations import peft_mixed_lora
from tuneforge.models.inference import BASE_ADAPTER, InferenceEngine

# Different ranks, alphas and target modules (c targets o_proj and down_proj only: some layers lack some adapters).
SPECS = {
    "a": (1, {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}),
    "b": (2, {"r": 8, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}),
    "c": (3, {"r": 6, "lora_alpha": 7, "target_modules": ["o_proj", "down_proj"]}),
}
NAMES = ["a", "b", BASE_ADAPTER, "c", "b", "a", BASE_ADAPTER, "c"]
PROMPTS = ["hello", "the quick brown fox jumps", "a", "one two three four five six", "Why is the sky blue?", "x y",
           "rain on the sea", "seven"]


@pytest.fixture()
def adapters(tmp_path):
    return {name: tiny_adapter(tmp_path / name, seed, **lora) for name, (seed, lora) in SPECS.items()}


def _engine(tokenizer, adapters, names=("a", "b", "c"), stacked=True) -> InferenceEngine:
    engine = InferenceEngine(build_tiny_model(), tokenizer)
    engine.stacked_lora = stacked
    for name in names:
        engine.add_adapter(name, str(adapters[name]))
    return engine


def _logits(engine, input_ids, names) -> torch.Tensor:
    with torch.no_grad():
        return engine.model(input_ids=input_ids, adapter_names=list(names)).logits


@pytest.fixture()
def peft_calls(monkeypatch):
    """Counts calls of PEFT's own `_mixed_batch_forward` (the upstream loop the stacks replace)."""
    from peft.tuners.lora.layer import LoraLayer

    upstream = LoraLayer._mixed_batch_forward
    calls = []

    def spy(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return upstream(self, *args, **kwargs)

    monkeypatch.setattr(LoraLayer, "_mixed_batch_forward", spy)
    return calls


def test_stacked_logits_equal_peft_mixed_path_and_each_row_alone(tokenizer, adapters, peft_calls):
    engine = _engine(tokenizer, adapters)
    torch.manual_seed(0)
    input_ids = torch.randint(3, 2000, (len(NAMES), 7))
    stacked = _logits(engine, input_ids, NAMES)
    assert peft_calls == [], "the stacked path should replace PEFT's loop on every LoRA Linear"
    alone = torch.cat([_logits(engine, input_ids[i:i + 1], [name]) for i, name in enumerate(NAMES)])
    peft_mixed_lora.restore(engine.model)
    upstream = _logits(engine, input_ids, NAMES)
    assert peft_calls, "restore() should give the layers back to PEFT"
    torch.testing.assert_close(stacked, upstream, atol=1e-5, rtol=0)
    torch.testing.assert_close(stacked, alone, atol=1e-5, rtol=0)
    with engine.base_context(), torch.no_grad():
        base = engine.model(input_ids=input_ids).logits
    torch.testing.assert_close(stacked[2], base[2], atol=1e-5, rtol=0)  # a "__base__" row is the bare base
    for row, other in ((0, 2), (1, 2), (3, 2), (0, 1), (1, 3)):  # every adapter changes its rows, differently
        assert (upstream[row] - base[row]).abs().max() > 1e-3 or row == 2
        assert not torch.allclose(stacked[row] - base[row], stacked[other] - base[other], atol=1e-4)


def test_mixed_greedy_generation_equals_each_prompt_alone_without_peft_loop(tokenizer, adapters, peft_calls):
    engine = _engine(tokenizer, adapters)
    names = [None if n == BASE_ADAPTER else n for n in NAMES]
    mixed = [c.token_ids for c in engine.generate(PROMPTS, adapters=names, max_new_tokens=6, batch_size=len(PROMPTS),
                                                  progress=False)]
    alone = [engine.generate([p], adapters=[n], max_new_tokens=6, progress=False)[0].token_ids
             for p, n in zip(PROMPTS, names)]
    assert mixed == alone
    assert peft_calls == [], "generation should run the stacked path, never PEFT's per-adapter loop"
    reference = _engine(tokenizer, adapters, stacked=False)
    assert [c.token_ids for c in reference.generate(PROMPTS, adapters=names, max_new_tokens=6,
                                                    batch_size=len(PROMPTS), progress=False)] == mixed
    assert peft_calls, "stacked_lora=False should keep PEFT's own path"
    assert len({tuple(alone[i]) for i in (0, 1, 2, 3)}) > 1, "the adapters should change some answer"


def test_stacks_follow_adapters_removed_and_added_at_run_time(tokenizer, adapters):
    engine = _engine(tokenizer, adapters, names=("a", "b"))
    torch.manual_seed(1)
    input_ids = torch.randint(3, 2000, (4, 6))
    names = ["a", "b", BASE_ADAPTER, "b"]
    _logits(engine, input_ids, names)  # fills the stacks with a and b
    engine.remove_adapter("b")
    engine.add_adapter("b", str(adapters["c"]))  # the same name, other weights and other target modules
    stacked = _logits(engine, input_ids, names)
    reference = _engine(tokenizer, {"a": adapters["a"], "b": adapters["c"]}, names=("a", "b"), stacked=False)
    torch.testing.assert_close(stacked, _logits(reference, input_ids, names), atol=1e-5, rtol=0)
    # The active adapter, while b now targets other modules: PEFT alone would leave "a" active (KeyError on the next
    # forward); peft_mixed_lora.delete_adapter activates b.
    engine.remove_adapter("a")
    only_b = _logits(engine, input_ids, ["b", "b", BASE_ADAPTER, "b"])
    torch.testing.assert_close(only_b, _logits(reference, input_ids, ["b", "b", BASE_ADAPTER, "b"]),
                               atol=1e-5, rtol=0)
    engine.remove_adapter("b")  # the last one: the bare base is back, nothing left patched
    assert not any(peft_mixed_lora.is_prepared(m) for m in engine.model.modules())


def test_server_lru_pool_swapping_adapters_keeps_answers_exact(tokenizer, adapters):
    from tuneforge.serve.engines.engine import Job, ServingEngine

    reference = _engine(tokenizer, adapters, stacked=False)
    engine = InferenceEngine(build_tiny_model(), tokenizer)
    serving = ServingEngine(engine, max_loaded=2, max_batch_size=4, window_ms=0, max_queue=64)
    try:
        for name in ("a", "b", "c"):
            serving.control(lambda n=name: serving.register(n, adapters[n], load=False)).result()
        prompts = [engine.prompt_ids(p) for p in PROMPTS[:4]]
        for pair in (("a", "b"), ("c", "a"), ("b", "c"), ("a", "b")):  # each batch evicts the one it does not use
            names = [pair[0], pair[1], None, pair[1]]
            jobs = [Job(p, n, 5) for p, n in zip(prompts, names)]
            serving.control(lambda js=jobs: serving._run_batch(js)).result()
            expected = reference.generate(prompts, adapters=names, max_new_tokens=5, batch_size=4, progress=False)
            assert [j.future.result(timeout=60).token_ids for j in jobs] == [c.token_ids for c in expected], pair
            assert sorted(engine.adapters) == sorted(pair)
    finally:
        serving.close()


def test_unsupported_adapters_fall_back_to_peft_per_layer(tokenizer, adapters, tmp_path, peft_calls):
    """lora_bias on q_proj: the q_proj layers take PEFT's path for batches holding that adapter, the others stack."""
    biased = tiny_adapter(tmp_path / "biased", 4, r=4, target_modules=["q_proj"], lora_bias=True)
    with torch.no_grad():  # a zero-initialised LoRA bias would not show whether it is applied
        from safetensors.torch import load_file, save_file

        tensors = load_file(biased / "adapter_model.safetensors")
        save_file({k: v + 0.5 if k.endswith("lora_B.bias") else v for k, v in tensors.items()},
                  biased / "adapter_model.safetensors")
    engine = _engine(tokenizer, {**adapters, "biased": biased}, names=("a", "b", "biased"))
    names = ["biased", "a", BASE_ADAPTER, "b"]
    input_ids = torch.randint(3, 2000, (4, 5), generator=torch.Generator().manual_seed(2))
    stacked = _logits(engine, input_ids, names)
    assert set(peft_calls) == {"Linear"} and len(peft_calls) == 2, peft_calls  # the 2 layers' q_proj only
    peft_mixed_lora.restore(engine.model)
    torch.testing.assert_close(stacked, _logits(engine, input_ids, names), atol=1e-5, rtol=0)
    peft_mixed_lora.prepare(engine.model)
    peft_calls.clear()
    _logits(engine, input_ids, ["a", "b", BASE_ADAPTER, "a"])  # without it, every layer stacks
    assert peft_calls == []
    peft_calls.clear()
    with torch.enable_grad():  # autograd on: PEFT's path, where gradients reach the LoRA weights (stacks are copies)
        engine.model(input_ids=input_ids, adapter_names=["a", "b", BASE_ADAPTER, "a"])
    assert len(peft_calls) == 8, peft_calls  # q/k/v/o of both layers
    engine.model.train()  # training mode (dropout on): PEFT refuses adapter_names at all, the stacks never run
    with pytest.raises(ValueError, match="training mode"):
        _logits(engine, input_ids, names)


def test_half_precision_stacks_match_peft(tokenizer, adapters):
    """bf16 weights: the stacked path runs in bf16 and stays as close to PEFT's as bf16 allows; its per-row scaling
    is applied in fp32 like PEFT's Python float (7/6 rounded to bf16 would shrink every delta by 0.2%)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    layer_model = get_peft_model(torch.nn.Sequential(torch.nn.Linear(64, 64, bias=False)),
                                 LoraConfig(r=6, lora_alpha=7, target_modules=["0"], init_lora_weights=False)).eval()
    layer = layer_model.base_model.model[0]
    torch.nn.init.zeros_(layer.base_layer.weight)  # the output is the LoRA delta alone
    x = torch.randn(8, 16, 64)
    exact = (x @ layer.lora_A["default"].weight.T @ layer.lora_B["default"].weight.T) * (7 / 6)
    layer_model.to(torch.bfloat16)
    peft_mixed_lora.prepare(layer_model)
    with torch.no_grad():
        delta = layer(x.to(torch.bfloat16), adapter_names=["default"] * 8).float()
    ratio = (delta * exact).sum() / (exact * exact).sum()  # least-squares gain of the bf16 delta over the exact one
    assert abs(ratio.item() - 1) < 5e-4, ratio
    engine = _engine(tokenizer, adapters)
    engine.model.to(torch.bfloat16)
    input_ids = torch.randint(3, 2000, (len(NAMES), 5), generator=torch.Generator().manual_seed(3))
    stacked = _logits(engine, input_ids, NAMES)
    peft_mixed_lora.restore(engine.model)
    upstream = _logits(engine, input_ids, NAMES)
    assert stacked.dtype == torch.bfloat16
    torch.testing.assert_close(stacked.float(), upstream.float(), atol=3e-2, rtol=0)
    assert (stacked.float() - upstream.float()).abs().mean() < 2e-3
