"""The serving engine: per-prompt limits and streaming in InferenceEngine, exact mixed-adapter batches through the
batcher, the LRU adapter pool and the adapter checks against the base."""
from __future__ import annotations

import json
import threading

import pytest

from tests.serve_helpers import tiny_adapter
from tests.tiny_models import build_tiny_model
from tuneforge.models.inference import InferenceEngine
from tuneforge.serve.engines.engine import AdapterRefused, Job, ServingEngine, check_adapter

PROMPTS = ["hello", "the quick brown fox jumps", "a", "one two three four five six", "Why is the sky blue?", "x y"]


@pytest.fixture()
def adapters(tmp_path):
    return {name: tiny_adapter(tmp_path / name, seed) for name, seed in (("a", 1), ("b", 2), ("c", 3))}


def test_per_prompt_max_new_tokens_equal_each_prompt_alone(tokenizer):
    engine = InferenceEngine(build_tiny_model(), tokenizer)
    limits = [2, 7, 4, 1, 5, 3]
    batched = engine.generate(PROMPTS, max_new_tokens=limits, batch_size=6, progress=False)
    alone = [engine.generate([p], max_new_tokens=n, progress=False)[0] for p, n in zip(PROMPTS, limits)]
    assert [c.token_ids for c in batched] == [c.token_ids for c in alone]
    assert [c.finish_reason for c in batched] == [c.finish_reason for c in alone]
    assert all(len(c.token_ids) <= n for c, n in zip(batched, limits))
    with pytest.raises(ValueError, match="2 max_new_tokens values for 6 prompts"):
        engine.generate(PROMPTS, max_new_tokens=[1, 2], progress=False)


def test_on_step_streams_every_new_token_of_every_row(tokenizer):
    engine = InferenceEngine(build_tiny_model(), tokenizer)
    seen: dict[int, list[int]] = {}

    def on_step(indices, tokens):
        for index, token in zip(indices, tokens):
            seen.setdefault(index, []).append(token)

    out = engine.generate(PROMPTS[:3], max_new_tokens=[3, 6, 4], batch_size=3, progress=False, on_step=on_step)
    for index, completion in enumerate(out):
        assert seen[index][: len(completion.token_ids)] == completion.token_ids


def test_remove_adapter_frees_it_and_the_last_one_restores_the_base(tokenizer, adapters):
    engine = InferenceEngine(build_tiny_model(), tokenizer)
    base_answer = engine.generate(PROMPTS[:2], max_new_tokens=5, progress=False)
    engine.add_adapter("a", str(adapters["a"]))
    engine.add_adapter("b", str(adapters["b"]))
    engine.remove_adapter("a")
    assert engine.adapters == ["b"]
    engine.remove_adapter("b")
    assert engine.adapters == []
    assert engine.generate(PROMPTS[:2], max_new_tokens=5, progress=False) == base_answer
    engine.add_adapter("a", str(adapters["a"]))  # can attach again after the base came back
    assert engine.adapters == ["a"]


def test_mixed_adapter_batch_through_the_batcher_equals_each_request_alone(tokenizer, adapters):
    engine = InferenceEngine(build_tiny_model(), tokenizer)
    sizes = []
    serving = ServingEngine(engine, max_loaded=3, max_batch_size=16, window_ms=300, max_queue=64,
                            on_batch=sizes.append)
    try:
        for name in ("a", "b"):
            serving.control(lambda n=name: serving.register(n, adapters[n])).result()
        names = ["a", "b", None, "a", "b", None]
        prompts = [engine.prompt_ids(p) for p in PROMPTS]
        jobs = [Job(p, n, 6) for p, n in zip(prompts, names)]
        start = threading.Barrier(len(jobs))

        def send(job):
            start.wait()
            serving.submit(job)

        threads = [threading.Thread(target=send, args=(j,)) for j in jobs]
        for t in threads:
            t.start()
        mixed = [j.future.result(timeout=120).token_ids for j in jobs]
        assert max(sizes) == len(jobs), f"the requests did not share one batch: {sizes}"
        alone = [serving.submit(Job(p, n, 6)).result(timeout=120).token_ids for p, n in zip(prompts, names)]
        assert mixed == alone
        assert len({tuple(alone[i]) for i in (0, 1, 2)}) > 1, "the adapters should change some answer"
    finally:
        serving.close()


def test_lru_keeps_at_most_n_loaded_and_reloads_on_demand(tokenizer, adapters):
    engine = InferenceEngine(build_tiny_model(), tokenizer)
    serving = ServingEngine(engine, max_loaded=2, max_batch_size=4, window_ms=0, max_queue=64)
    try:
        for name in ("a", "b", "c"):
            serving.control(lambda n=name: serving.register(n, adapters[n])).result()
        assert list(serving.loaded) == ["b", "c"] and set(serving.known) == {"a", "b", "c"}
        prompt = engine.prompt_ids("hello")
        first = serving.submit(Job(prompt, "a", 4)).result(timeout=60)
        assert list(serving.loaded) == ["c", "a"] and sorted(engine.adapters) == ["a", "c"]
        serving.control(lambda: serving.unregister("a")).result()
        assert "a" not in serving.known and engine.adapters == ["c"]
        with pytest.raises(Exception, match="no adapter named 'a'"):
            serving.submit(Job(prompt, "a", 4)).result(timeout=60)
        serving.control(lambda: serving.register("a", adapters["a"])).result()
        assert serving.submit(Job(prompt, "a", 4)).result(timeout=60) == first
    finally:
        serving.close()


def test_adapter_checks_refuse_what_the_base_cannot_serve(tokenizer, tmp_path):
    engine = InferenceEngine(build_tiny_model(), tokenizer)
    saved = tiny_adapter(tmp_path / "extra", 1, modules_to_save=["lm_head"])
    with pytest.raises(AdapterRefused, match="full copies of modules"):
        check_adapter(engine, saved, None)
    other = tmp_path / "other"
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    wide = LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=96, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2))
    get_peft_model(wide, LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False)).save_pretrained(other)
    with pytest.raises(AdapterRefused, match="96 wide in the adapter but 64 in the base"):
        check_adapter(engine, other, None)
    good = tiny_adapter(tmp_path / "good", 2)
    check_adapter(engine, good, None)
    (tmp_path / "manifest.json").write_text(json.dumps({"base_model": {"weights_sha256": "f" * 64}}))
    with pytest.raises(AdapterRefused, match="trained on base weights ffffffffffff"):
        check_adapter(engine, good, "0" * 64)
    check_adapter(engine, good, "f" * 64)
    with pytest.raises(AdapterRefused, match="not an adapter folder"):
        check_adapter(engine, tmp_path / "nothing", None)
