"""The inference engine: batched greedy generation gives exactly the text each prompt gets alone, in the caller's
order; sampling, stop strings, mixed adapters and the log-prob scorers."""
from __future__ import annotations

import torch

from tuneforge.models.inference import InferenceEngine, length_sorted_batches, stop_token_ids


def generate_greedy(model, tokenizer, prompts, **options) -> list[str]:
    return [c.text for c in InferenceEngine(model, tokenizer).generate(prompts, **options)]

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


# ------------------------------------------------------------------------------------------- beyond greedy
def test_sampling_is_seeded_and_temperature_zero_is_greedy(tiny_model, tokenizer):
    engine = InferenceEngine(tiny_model, tokenizer)
    prompts = _prompts(tokenizer)[:3]
    sampled = [c.token_ids for c in engine.generate(prompts, max_new_tokens=8, temperature=1.5, seed=7,
                                                    progress=False)]
    again = [c.token_ids for c in engine.generate(prompts, max_new_tokens=8, temperature=1.5, seed=7,
                                                  progress=False)]
    other = [c.token_ids for c in engine.generate(prompts, max_new_tokens=8, temperature=1.5, seed=8,
                                                  progress=False)]
    greedy = [c.token_ids for c in engine.generate(prompts, max_new_tokens=8, progress=False)]
    assert sampled == again and sampled != other and sampled != greedy


def test_completion_records_finish_reason_and_stop_strings_cut_the_text(tiny_model, tokenizer):
    engine = InferenceEngine(tiny_model, tokenizer)
    prompt = _prompts(tokenizer)[1]
    full = engine.generate([prompt], max_new_tokens=10, progress=False)[0]
    assert full.finish_reason == "length" and full.completion_tokens == 10 and full.prompt_tokens == len(prompt)
    stop = full.text[len(full.text) // 2:][:2]
    assert stop.strip(), full.text
    cut = engine.generate([prompt], max_new_tokens=10, stop=[stop], progress=False)[0]
    assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.find(stop)]


def test_end_of_turn_token_of_the_template_stops_generation(tokenizer):
    from tuneforge.models.inference import end_of_turn_id

    assert end_of_turn_id(tokenizer) == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_mixed_adapter_batch_equals_each_request_alone(tokenizer, tmp_path):
    """Two LoRA adapters on one base: every prompt's greedy answer in a mixed batch equals its answer alone."""
    from peft import LoraConfig, get_peft_model

    from tests.tiny_models import build_tiny_model

    for seed, name in ((1, "a"), (2, "b")):
        torch.manual_seed(seed)
        peft_model = get_peft_model(build_tiny_model(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                                   init_lora_weights=False))
        peft_model.save_pretrained(tmp_path / name)
    engine = InferenceEngine(build_tiny_model(), tokenizer)
    engine.add_adapter("a", str(tmp_path / "a"))
    engine.add_adapter("b", str(tmp_path / "b"))
    prompts = _prompts(tokenizer)[:6]
    names = ["a", "b", None, "a", "b", "__base__"]
    mixed = [c.token_ids for c in engine.generate(prompts, adapters=names, max_new_tokens=6, batch_size=6,
                                                  progress=False)]
    alone = [engine.generate([p], adapters=[n], max_new_tokens=6, batch_size=1, progress=False)[0].token_ids
             for p, n in zip(prompts, names)]
    assert mixed == alone
    assert alone[0] != alone[1] or alone[0] != alone[2], "the adapters should change some answer"
    import pytest

    from tuneforge.errors import TuneforgeError

    with pytest.raises(TuneforgeError, match="no adapter named 'c'"):
        engine.generate(prompts[:1], adapters=["c"], max_new_tokens=2, progress=False)


def test_reference_nll_scores_the_answer_and_its_end_of_turn_token(tiny_model, tokenizer):
    from tuneforge.eval.tasks import make_item

    engine = InferenceEngine(tiny_model, tokenizer)
    item = make_item("1", "x", [{"role": "user", "content": "Name?"}], "Ada")
    (nll, count), = engine.reference_nll([item])
    answer = tokenizer("Ada", add_special_tokens=False)["input_ids"] + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    prompt = engine.prompt_ids(item)
    with torch.no_grad():
        logits = tiny_model(torch.tensor([prompt + answer])).logits[0]
    logp = torch.log_softmax(logits, -1)
    expected = -sum(float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(answer))
    assert count == len(answer) and abs(nll - expected) < 1e-4


def test_finish_tokens_cuts_at_stop_ids_then_stop_strings_and_counts_only_the_kept_tokens():
    from tuneforge.models.inference import finish_tokens

    pieces = {1: "ab", 2: "c", 3: "END", 4: "x", 9: "<eos>"}

    def decode(ids):
        return "".join(pieces[i] for i in ids)

    assert finish_tokens([1, 2, 9, 4], {9}, decode, ()) == ([1, 2], "abc", "stop")
    assert finish_tokens([1, 2, 4], {9}, decode, ()) == ([1, 2, 4], "abcx", "length")
    # "END" starts inside token 3: the text stops before it, and tokens 3 and 4 are not counted as sent.
    assert finish_tokens([1, 2, 3, 4], {9}, decode, ("EN",)) == ([1, 2], "abc", "stop")
    # A stop string inside a token keeps that token (its text reaches past the cut).
    assert finish_tokens([1, 2, 4], set(), decode, ("b",), "length") == ([1], "a", "stop")
    assert finish_tokens([4], set(), decode, (), "stop") == ([4], "x", "stop")


def test_budget_batches_cap_prompts_and_cache_positions():
    from tuneforge.models.inference import budget_batches

    lengths, limits = [30, 20, 10, 10, 5, 5], [10] * 6
    order = list(range(6))  # already longest first
    assert budget_batches(order, lengths, limits, batch_size=4) == [[0, 1, 2, 3], [4, 5]]
    # 100 positions: 30 + 10 = 40 per row -> 2 rows; then 20 + 10 = 30 -> 3 rows; 5 + 10 -> the rest
    assert budget_batches(order, lengths, limits, batch_size=8, batch_tokens=100) == [[0, 1], [2, 3, 4, 5]]
    assert budget_batches(order, lengths, limits, batch_size=8, batch_tokens=10) == [[i] for i in order]


def test_token_budget_batches_give_the_same_greedy_answers(tiny_model, tokenizer):
    engine = InferenceEngine(tiny_model, tokenizer)
    prompts = [[1, *range(40, 40 + n)] for n in (3, 9, 5, 12, 4, 7)]
    by_count = engine.generate(prompts, max_new_tokens=6, batch_size=6, progress=False)
    engine.batch_tokens = 40
    by_tokens = engine.generate(prompts, max_new_tokens=6, batch_size=6, progress=False)
    assert [c.token_ids for c in by_tokens] == [c.token_ids for c in by_count]
    try:
        engine.generate(prompts, max_new_tokens=6, batch_tokens=0, progress=False)
    except ValueError as error:
        assert "batch_tokens must be positive" in str(error)
    else:
        raise AssertionError("batch_tokens=0 must be refused")
