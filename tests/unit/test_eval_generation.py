"""Batched greedy generation must give exactly the text each prompt gets alone, in the caller's order."""
from __future__ import annotations

import torch

from tuneforge.eval.generation import generate_greedy, length_sorted_batches, stop_token_ids

TEXTS = [
    "hello",
    "the quick brown fox jumps over the lazy dog",
    "a",
    'Return JSON: {"name": "Ada", "age": 36}',
    "one two three four five six",
    "Why is the sky blue?",
    "x y",
]


def _prompts(tokenizer) -> list[list[int]]:
    return [tokenizer(text)["input_ids"] for text in TEXTS]


def _reference_greedy(model, prompt: list[int], steps: int) -> list[int]:
    """Argmax decoding with a full forward per step: no cache, no padding, no generate()."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            ids.append(int(logits.argmax()))
    return ids[len(prompt):]


def test_batched_matches_one_by_one_in_original_order(tiny_model, tokenizer):
    prompts = _prompts(tokenizer)
    assert len({len(p) for p in prompts}) > 3, "prompts of different lengths are needed to exercise padding"
    batched = generate_greedy(tiny_model, tokenizer, prompts, max_new_tokens=6, batch_size=3, progress=False)
    alone = [
        generate_greedy(tiny_model, tokenizer, [p], max_new_tokens=6, batch_size=1, progress=False)[0]
        for p in prompts
    ]
    assert batched == alone
    assert all(text for text in batched), "the tiny model should produce some text for every prompt"


def test_matches_uncached_argmax_reference(tiny_model, tokenizer):
    prompts = _prompts(tokenizer)
    # The random tiny model never emits eos (id 2) in 6 steps for these prompts; checked inside the loop.
    texts = generate_greedy(tiny_model, tokenizer, prompts, max_new_tokens=6, batch_size=4, progress=False)
    for prompt, text in zip(prompts, texts):
        expected_ids = _reference_greedy(tiny_model, prompt, 6)
        assert 2 not in expected_ids
        assert text == tokenizer.decode(expected_ids, skip_special_tokens=True)


def test_stops_at_generation_config_eos_and_drops_the_rest(tiny_model, tokenizer):
    prompt = tokenizer("the quick brown fox jumps over the lazy dog")["input_ids"]
    continuation = _reference_greedy(tiny_model, prompt, 6)
    stop = continuation[2]
    # A stop id first produced at step k cuts the text to the k tokens before it.
    first = continuation.index(stop)
    tiny_model.generation_config.eos_token_id = [2, stop]
    assert stop_token_ids(tiny_model, tokenizer) == [2, stop]
    other = tokenizer("hello")["input_ids"]
    texts = generate_greedy(tiny_model, tokenizer, [other, prompt], max_new_tokens=6, batch_size=2, progress=False)
    assert texts[1] == tokenizer.decode(continuation[:first], skip_special_tokens=True)


def test_restores_training_mode_and_handles_edge_cases(tiny_model, tokenizer):
    tiny_model.train()
    assert generate_greedy(tiny_model, tokenizer, [], max_new_tokens=4, progress=False) == []
    generate_greedy(tiny_model, tokenizer, [[1, 2, 3]], max_new_tokens=2, progress=True)
    assert tiny_model.training
    for bad in ({"max_new_tokens": 0}, {"max_new_tokens": 2, "batch_size": 0}):
        try:
            generate_greedy(tiny_model, tokenizer, [[5]], progress=False, **bad)
        except ValueError:
            pass
        else:
            raise AssertionError(f"{bad} should be rejected")
    try:
        generate_greedy(tiny_model, tokenizer, [[5], []], max_new_tokens=2, progress=False)
    except ValueError as exc:
        assert "prompt 1 is empty" in str(exc)
    else:
        raise AssertionError("an empty prompt should be rejected")


def test_length_sorted_batches_longest_first_stable():
    sequences = [[1], [1, 2, 3], [1, 2], [1, 2, 3], [1]]
    assert length_sorted_batches(sequences, 2) == [[1, 3], [2, 0], [4]]


def test_model_generation_defaults_do_not_leak_into_greedy(tiny_model, tokenizer):
    # transformers 5 fills unset fields of a passed GenerationConfig from model.generation_config; without the
    # swap in generate_greedy these settings change (and randomise) the output. Fails if that workaround regresses.
    prompts = _prompts(tokenizer)[:3]
    clean = generate_greedy(tiny_model, tokenizer, prompts, max_new_tokens=6, progress=False)
    saved = tiny_model.generation_config
    saved.do_sample, saved.temperature = True, 5.0
    saved.repetition_penalty, saved.no_repeat_ngram_size = 5.0, 1
    # Fields whose neutral value is None cannot be overridden in the passed config, only kept from being read.
    produced = {t for text in clean for t in tokenizer(text, add_special_tokens=False)["input_ids"]}
    saved.suppress_tokens = sorted(produced)
    for _ in range(2):
        assert generate_greedy(tiny_model, tokenizer, prompts, max_new_tokens=6, progress=False) == clean
    assert tiny_model.generation_config is saved and saved.repetition_penalty == 5.0
