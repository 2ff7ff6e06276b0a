"""evaluate_items scores generated text per item; compare_results pairs base and tuned by item id."""
from __future__ import annotations

import pytest

from tuneforge.eval.compare import build_results, compare_results, evaluate_items
from tuneforge.eval.generation import generate_greedy


def _per_item(scores: dict[str, float]) -> dict:
    return {
        "per_item": [{"id": item_id, "prediction": "", "scores": {"exact_match": s}} for item_id, s in scores.items()]
    }


def test_evaluate_items_scores_generated_text(tiny_model, tokenizer):
    prompts = [tokenizer(t)["input_ids"] for t in ("hello there", "a b c d e f")]
    generated = generate_greedy(tiny_model, tokenizer, prompts, max_new_tokens=4, progress=False)
    items = [
        {"id": "right", "prompt_ids": prompts[0], "reference": "  " + generated[0] + " "},
        {"id": "wrong", "prompt_ids": prompts[1], "reference": '{"k": 1}'},
    ]
    result = evaluate_items(
        tiny_model, tokenizer, items, metrics=["exact_match"], max_new_tokens=4, batch_size=2, label="base",
    )
    assert result["label"] == "base"
    assert [r["id"] for r in result["per_item"]] == ["right", "wrong"]
    assert [r["prediction"] for r in result["per_item"]] == generated
    assert result["per_item"][0]["scores"]["exact_match"] == 1.0
    assert result["per_item"][1]["scores"] == {"exact_match": 0.0}
    assert result["summary"]["exact_match"] == 0.5
    assert result["seconds"] > 0 and result["items_per_second"] == pytest.approx(2 / result["seconds"])


def test_evaluate_items_rejects_bad_items(tiny_model, tokenizer):
    common = dict(max_new_tokens=2, batch_size=2, label="base")
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_items(tiny_model, tokenizer, [], metrics=["bleu"], **common)
    with pytest.raises(ValueError, match="lacks reference"):
        evaluate_items(tiny_model, tokenizer, [{"id": 1, "prompt_ids": [1]}], metrics=["exact_match"], **common)
    # Checked before any generation: the model is never called.
    with pytest.raises(ValueError, match="item 'x': reference unusable for json_fields"):
        evaluate_items(None, tokenizer, [{"id": "x", "prompt_ids": [1], "reference": "plain"}],
                       metrics=["json_fields"], **common)
    duplicated = [{"id": 1, "prompt_ids": [1], "reference": ""}] * 2
    with pytest.raises(ValueError, match="duplicate item ids"):
        evaluate_items(tiny_model, tokenizer, duplicated, metrics=["exact_match"], **common)


def test_compare_results_pairs_by_id_not_position():
    base = _per_item({"a": 0.0, "b": 1.0, "c": 0.0, "d": 1.0})
    # Same item scores listed in another order: a positional pairing would see a spurious difference.
    tuned = _per_item({"d": 1.0, "c": 1.0, "b": 1.0, "a": 0.0})
    comparison = compare_results(base, tuned, metrics=["exact_match"], n_resamples=1000)
    result = comparison["exact_match"]
    assert (result["mean_a"], result["mean_b"], result["delta"], result["n"]) == (0.5, 0.75, 0.25, 4)
    same = compare_results(base, _per_item({"d": 1.0, "c": 0.0, "b": 1.0, "a": 0.0}), metrics=["exact_match"],
                           n_resamples=100)
    assert (same["exact_match"]["ci_low"], same["exact_match"]["ci_high"]) == (0.0, 0.0)


def test_compare_results_rejects_mismatched_ids():
    with pytest.raises(ValueError, match=r"only in base: \['b'\].*only in tuned: \['z'\]"):
        compare_results(_per_item({"a": 1, "b": 0}), _per_item({"a": 1, "z": 0}), metrics=["exact_match"],
                        n_resamples=10)
    with pytest.raises(ValueError, match="no 'json_fields' score"):
        compare_results(_per_item({"a": 1}), _per_item({"a": 1}), metrics=["json_fields"], n_resamples=10)


def test_build_results_lays_items_side_by_side():
    base = {**_per_item({"a": 0.0, "b": 1.0}), "summary": {"exact_match": 0.5}, "seconds": 2.0, "items_per_second": 1.0}
    tuned = {**_per_item({"b": 1.0, "a": 1.0}), "summary": {"exact_match": 1.0}, "seconds": 1.0,
             "items_per_second": 2.0}
    items = [{"id": "a", "prompt_ids": [1], "reference": "x", "prompt_text": "Q?"}, {"id": "b", "reference": "y"}]
    comparison = compare_results(base, tuned, metrics=["exact_match"], n_resamples=100)
    results = build_results(base, tuned, items, metrics=["exact_match"], comparison=comparison,
                            tuned_eval_loss={"loss": 1.0, "perplexity": 2.7, "tokens": 5})
    assert results["headline_metric"] == "exact_match" and results["n_items"] == 2
    assert results["models"]["base"]["eval_loss"] is None
    assert results["models"]["tuned"]["eval_loss"]["tokens"] == 5
    assert results["items"][0] == {
        "id": "a", "prompt_text": "Q?", "reference": "x",
        "base": {"prediction": "", "scores": {"exact_match": 0.0}},
        "tuned": {"prediction": "", "scores": {"exact_match": 1.0}},
    }
