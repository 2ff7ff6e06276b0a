"""Base-vs-tuned evaluation: generate answers, score them per item, and compare the two models item by item.

The per-item records are kept (not just the means) because the paired bootstrap resamples them and the run report
shows the items where the two models disagree most.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

from tuneforge.eval.bootstrap import paired_bootstrap
from tuneforge.eval.generation import generate_greedy
from tuneforge.eval.metrics import get_metric


def _check_unique_ids(ids: Sequence, what: str) -> None:
    duplicates = [item_id for item_id, count in Counter(ids).items() if count > 1]
    if duplicates:
        shown = ", ".join(repr(d) for d in sorted(duplicates, key=repr)[:5])
        raise ValueError(f"{what} has duplicate item ids ({shown}); pairing by id needs each id once")


def evaluate_items(
    model,
    tokenizer,
    items: list[dict],
    *,
    metrics: list[str],
    max_new_tokens: int,
    batch_size: int,
    label: str,
) -> dict:
    """Generate greedily for every item and score it with each metric.

    Returns {"label", "summary": {metric: mean}, "per_item": [{"id", "prediction", "scores"}], "seconds",
    "items_per_second"}; `seconds` covers generation and scoring, the cost a user waits for.
    """
    if not metrics:
        raise ValueError("evaluate_items needs at least one metric")
    scorers = {name: get_metric(name) for name in metrics}
    for index, item in enumerate(items):
        missing = [field for field in ("id", "prompt_ids", "reference") if field not in item]
        if missing:
            raise ValueError(f"item {index} lacks {', '.join(missing)}")
    _check_unique_ids([item["id"] for item in items], label)
    # Score an empty answer against every reference first: a reference the metric cannot use (say, not JSON for
    # json_fields) then fails in a second, not after minutes of generation.
    for item in items:
        for name, scorer in scorers.items():
            try:
                scorer("", item["reference"])
            except ValueError as exc:
                raise ValueError(f"item {item['id']!r}: reference unusable for {name}: {exc}") from exc

    started = time.perf_counter()
    predictions = generate_greedy(
        model,
        tokenizer,
        [list(item["prompt_ids"]) for item in items],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        description=f"generating ({label})",
    )
    per_item = []
    for item, prediction in zip(items, predictions):
        scores = {name: float(scorer(prediction, item["reference"])) for name, scorer in scorers.items()}
        per_item.append({"id": item["id"], "prediction": prediction, "scores": scores})
    seconds = time.perf_counter() - started

    summary = {
        name: (sum(record["scores"][name] for record in per_item) / len(per_item) if per_item else 0.0)
        for name in metrics
    }
    return {
        "label": label,
        "summary": summary,
        "per_item": per_item,
        "seconds": seconds,
        "items_per_second": len(per_item) / seconds if seconds > 0 else 0.0,
    }


def compare_results(base: dict, tuned: dict, *, metrics: list[str], n_resamples: int, seed: int = 0) -> dict:
    """Paired bootstrap per metric, tuned minus base, pairing items by id -> {metric: PairedResult.to_dict()}."""
    _check_unique_ids([record["id"] for record in base["per_item"]], "the base results")
    _check_unique_ids([record["id"] for record in tuned["per_item"]], "the tuned results")
    base_items = {record["id"]: record for record in base["per_item"]}
    tuned_items = {record["id"]: record for record in tuned["per_item"]}
    if base_items.keys() != tuned_items.keys():
        only_base = sorted(base_items.keys() - tuned_items.keys(), key=repr)
        only_tuned = sorted(tuned_items.keys() - base_items.keys(), key=repr)
        raise ValueError(
            "base and tuned results cover different items "
            f"(only in base: {only_base[:5]!r}{'...' if len(only_base) > 5 else ''}, "
            f"only in tuned: {only_tuned[:5]!r}{'...' if len(only_tuned) > 5 else ''}); "
            "evaluate both models on the same items"
        )
    ids = [record["id"] for record in base["per_item"]]
    comparison = {}
    for name in metrics:
        for which, records in (("base", base_items), ("tuned", tuned_items)):
            lacking = [item_id for item_id in ids if name not in records[item_id]["scores"]]
            if lacking:
                raise ValueError(f"the {which} results have no {name!r} score for item {lacking[0]!r}")
        result = paired_bootstrap(
            [base_items[item_id]["scores"][name] for item_id in ids],
            [tuned_items[item_id]["scores"][name] for item_id in ids],
            metric=name,
            n_resamples=n_resamples,
            seed=seed,
        )
        comparison[name] = result.to_dict()
    return comparison


def build_results(
    base: dict,
    tuned: dict,
    items: list[dict],
    *,
    metrics: list[str],
    comparison: dict,
    base_eval_loss: dict | None = None,
    tuned_eval_loss: dict | None = None,
) -> dict:
    """The `eval/results.json` document the run report reads: summaries, comparison and side-by-side items.

    `items` are the evaluated items (for their prompt text and reference); the first metric is the headline.
    """
    by_id = {"base": {r["id"]: r for r in base["per_item"]}, "tuned": {r["id"]: r for r in tuned["per_item"]}}
    side_by_side = []
    for item in items:
        entry = {"id": item["id"], "prompt_text": item.get("prompt_text"), "reference": item["reference"]}
        for which in ("base", "tuned"):
            record = by_id[which][item["id"]]
            entry[which] = {"prediction": record["prediction"], "scores": record["scores"]}
        side_by_side.append(entry)

    def model_entry(result: dict, loss: dict | None) -> dict:
        return {
            "summary": result["summary"],
            "eval_loss": loss,
            "seconds": result["seconds"],
            "items_per_second": result["items_per_second"],
        }

    return {
        "headline_metric": metrics[0],
        "metrics": list(metrics),
        "n_items": len(items),
        "models": {"base": model_entry(base, base_eval_loss), "tuned": model_entry(tuned, tuned_eval_loss)},
        "comparison": comparison,
        "items": side_by_side,
    }
