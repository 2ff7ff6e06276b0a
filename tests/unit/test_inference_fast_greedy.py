"""The engine's greedy loop (models/decoding.py): shared prefixes, finished rows leaving the batch and LoRA merged for
the call change no token. Every case is compared token for token with a plain uncached argmax loop over the model
as it is (PEFT forward included), one prompt at a time."""
from __future__ import annotations

import pytest
import torch

from tests.tiny_models import build_chatty_model
from tuneforge.models import decoding
from tuneforge.models.inference import InferenceEngine

QUESTIONS = ["Name?", "Where does Ada Lovelace live these days?", "x", "Return the JSON for Bob, Acme, Oslo please.",
             "one two three four five six seven"]


def _chat_prompts(engine) -> list[list[int]]:
    # Chat prompts share the template's system turn and the instruction: a long common prefix, as in evaluation.
    return [engine.prompt_ids([{"role": "user", "content": f"Extract the contact as JSON.\n\n{q}"}])
            for q in QUESTIONS]


def _reference(model, prompt: list[int], steps: int, stop_ids=()) -> list[int]:
    """Argmax with a full forward per step: no cache, no padding, no batching, no generate()."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            token = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            ids.append(token)
            if token in stop_ids:
                break
    return ids[len(prompt):]


def _lora(seed: int = 1):
    from peft import LoraConfig, get_peft_model

    model = build_chatty_model()
    torch.manual_seed(seed)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"],
                                            init_lora_weights=False))


@pytest.fixture()
def chatty():
    return build_chatty_model()


def _spy_prefix(monkeypatch) -> list[int]:
    """Record the shared-prefix length of every batch the greedy loop runs."""
    seen: list[int] = []
    original = decoding.greedy_batch

    def spy(model, rows, *args, **kwargs):
        import os

        seen.append(min(len(os.path.commonprefix([list(r) for r in rows])), min(len(r) for r in rows) - 1))
        return original(model, rows, *args, **kwargs)

    monkeypatch.setattr("tuneforge.models.inference.greedy_batch", spy)
    return seen


def test_shared_prefix_batches_match_the_reference(chatty, tokenizer, monkeypatch):
    engine = InferenceEngine(chatty, tokenizer)
    prompts = _chat_prompts(engine)
    seen = _spy_prefix(monkeypatch)
    got = [c.token_ids for c in engine.generate(prompts, max_new_tokens=6, batch_size=3, progress=False)]
    assert seen and min(seen) > 20, "the chat prompts should share the template's head"
    assert got == [_reference(chatty, p, 6, {2}) for p in prompts]


def test_one_adapter_is_merged_for_the_call_and_the_model_is_left_as_it_was(tokenizer, monkeypatch):
    model = _lora()
    engine = InferenceEngine(model, tokenizer)
    prompts = _chat_prompts(engine)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    counts = []
    original = decoding.merged_lora

    def counting(target):
        context = original(target)

        class Wrapped:
            def __enter__(self):
                counts.append(context.__enter__())
                return counts[-1]

            def __exit__(self, *exc):
                return context.__exit__(*exc)

        return Wrapped()

    monkeypatch.setattr("tuneforge.models.inference.merged_lora", counting)
    got = [c.token_ids for c in engine.generate(prompts, max_new_tokens=6, batch_size=4, progress=False)]
    assert counts == [2 * 3], "q, v and o of both layers should have been merged"
    expected = [_reference(model, p, 6, {2}) for p in prompts]
    assert got == expected
    base = [_reference(build_chatty_model(), p, 6, {2}) for p in prompts]
    assert got != base, "the adapter should change some answer"
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    from peft.tuners.lora.layer import Linear as LoraLinear

    assert sum(type(m) is LoraLinear for m in model.modules()) == 6, "the LoRA layers should be back in place"

    # Switched off (what evaluating the base during training does): the base layers alone, still exact.
    with engine.base_context():
        off = [c.token_ids for c in engine.generate(prompts, max_new_tokens=6, batch_size=4, progress=False)]
    assert off == base


def test_mixed_adapters_stay_on_the_peft_path_and_match_each_adapter_alone(tokenizer, tmp_path):
    for seed, name in ((1, "a"), (2, "b")):
        _lora(seed).save_pretrained(tmp_path / name)
    engine = InferenceEngine(build_chatty_model(), tokenizer)
    engine.add_adapter("a", str(tmp_path / "a"))
    engine.add_adapter("b", str(tmp_path / "b"))
    prompts = _chat_prompts(engine)[:4]
    names = ["a", "b", None, "b"]
    mixed = [c.token_ids for c in engine.generate(prompts, adapters=names, max_new_tokens=5, batch_size=4,
                                                  progress=False)]
    for prompt, name, tokens in zip(prompts, names, mixed):
        if name is None:
            with engine.model.disable_adapter():
                assert tokens == _reference(engine.model, prompt, 5, {2})
        else:
            engine.model.set_adapter(name)
            assert tokens == _reference(engine.model, prompt, 5, {2})


def test_rows_that_stop_early_leave_the_batch_and_the_others_are_unchanged(chatty, tokenizer):
    engine = InferenceEngine(chatty, tokenizer)
    prompts = _chat_prompts(engine)
    free = [_reference(chatty, p, 8) for p in prompts]
    # Stop ids that two rows produce at steps 2 and 5: those rows leave the batch early, the others run on.
    stops = [free[1][2], free[3][5]]
    chatty.generation_config.eos_token_id = [2, *stops]
    lengths = [min([row.index(t) for t in stops if t in row] + [len(row)]) for row in free]
    assert lengths[1] <= 2 and lengths[3] <= 5 and max(lengths) == 8, lengths
    stream: dict[int, list[int]] = {i: [] for i in range(len(prompts))}

    def on_step(rows, tokens):
        for row, token in zip(rows, tokens):
            stream[row].append(token)

    got = engine.generate(prompts, max_new_tokens=8, batch_size=5, progress=False, on_step=on_step)
    expected = [_reference(chatty, p, 8, {2, *stops}) for p in prompts]
    assert [c.token_ids for c in got] == [row[:n] for row, n in zip(expected, lengths)]
    assert [c.finish_reason for c in got] == ["stop" if n < 8 else "length" for n in lengths]
    # Streaming: each row's tokens step by step, pad ids (2) once it has finished.
    for index, completion in enumerate(got):
        produced = expected[index]
        assert stream[index][: len(produced)] == produced and set(stream[index][len(produced):]) <= {2}


def test_per_prompt_limits_and_stop_strings_in_the_greedy_loop(chatty, tokenizer):
    engine = InferenceEngine(chatty, tokenizer)
    prompts = _chat_prompts(engine)[:3]
    limits = [2, 7, 4]
    got = engine.generate(prompts, max_new_tokens=limits, batch_size=3, progress=False)
    assert [c.token_ids for c in got] == [_reference(chatty, p, n, {2}) for p, n in zip(prompts, limits)]
    assert [c.finish_reason for c in got] == ["length"] * 3
    full = got[1].text
    stop = full[len(full) // 2:][:2]
    cut = engine.generate(prompts[1:2], max_new_tokens=7, stop=[stop], progress=False)[0]
    assert cut.finish_reason == "stop" and cut.text == full[: full.find(stop)]


@pytest.mark.parametrize("switch", ["fast_greedy", "merge_lora", "share_prefix"])
def test_each_saving_can_be_switched_off_with_the_same_answers(tokenizer, switch):
    model = _lora(3)
    engine = InferenceEngine(model, tokenizer)
    prompts = _chat_prompts(engine)
    on = [c.token_ids for c in engine.generate(prompts, max_new_tokens=5, batch_size=5, progress=False)]
    setattr(engine, switch, False)
    off = [c.token_ids for c in engine.generate(prompts, max_new_tokens=5, batch_size=5, progress=False)]
    assert on == off


def test_prompt_tuning_is_left_to_generate():
    from peft import PromptTuningConfig, get_peft_model

    model = get_peft_model(build_chatty_model(), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    assert decoding.fast_greedy_target(model) is None
    assert decoding.fast_greedy_target(_lora()) is not None


def test_a_lora_on_a_bf16_base_is_not_merged_for_generation():
    """bf16 cannot hold W + delta exactly: those layers keep their LoRA, so the output is the adapter's own."""
    model = _lora().to(torch.bfloat16)
    ids = torch.tensor([[5, 9, 14, 3, 7]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        with decoding.merged_lora(model) as merged:
            assert merged == 0
            torch.testing.assert_close(model(input_ids=ids).logits, expected, rtol=0, atol=0)
        # Switched off, a bf16 LoRA layer is exactly its base layer: that swap stays.
        with model.disable_adapter(), decoding.merged_lora(model) as merged:
            assert merged == 0
            assert not any("lora_A" in name for name, _ in model.named_modules())
