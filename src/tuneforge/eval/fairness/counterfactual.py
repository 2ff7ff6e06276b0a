"""Counterfactual evaluation: each item asked again with swapped names and attribute terms; the share of answers
that change is the flip rate.

The swap list is the data layer's (`tuneforge.data.fairness.swaps`, format and default in
assets/fairness/swaps.yaml, `--counterfactual default`): both ways, whole words, case-preserving, one pass.

An item takes part when a swap changed its prompt. Its answer **changed** (a flip) when the counterfactual answer
differs from the original answer both as it is and with the same swaps applied to it, after collapsing whitespace:
"She is a nurse." for "He is a nurse." is the same answer about the swapped person, not a flip. Label tasks
compare the predicted labels. The reference is swapped too (for label tasks only when the swapped text is also a
label) and the counterfactual answers are scored with the task's item metrics, so `score_change` says whether the
metric moves, not just the wording.

Stored per model as ``models.X.counterfactual`` (see `counterfactual_summary`), each taking item's
``scores["counterfactual_flip_rate"]`` (1.0 changed, 0.0 same; items without a swap have none, so the paired
base-vs-tuned comparison uses the items both models had) and its ``counterfactual`` record, and
``summary["counterfactual_flip_rate"]`` for gates.
"""
from __future__ import annotations

from tuneforge.data.fairness.swaps import SwapList

METRIC = "counterfactual_flip_rate"
EXAMPLES = 5


def counterfactual_items(items: list[dict], swaps: SwapList, labels: list[str] | None) -> list[tuple[dict, set[str]]]:
    """(swapped copy, pairs matched) of each item whose prompt a swap changes."""
    out = []
    for item in items:
        matched: set[str] = set()
        messages = None
        if item.get("messages") is not None:
            messages = []
            for message in item["messages"]:
                content = message.get("content")
                if isinstance(content, str):
                    content, hit = swaps.apply(content)
                    matched |= hit
                messages.append({**message, "content": content})
            prompt = None
        else:
            prompt, matched = swaps.apply(item["prompt"])
        if not matched:
            continue
        reference, _ = swaps.apply(item["reference"])
        if labels is not None and reference not in labels:
            reference = item["reference"]
        out.append(({**item, "messages": messages, "prompt": prompt, "reference": reference}, matched))
    return out


def _normal(text: str) -> str:
    return " ".join(str(text).split())


def answer_changed(original: str, counterfactual: str, swaps: SwapList) -> bool:
    """True when the counterfactual answer is neither the original answer nor the original with the swaps applied."""
    cf = _normal(counterfactual)
    return cf != _normal(original) and cf != _normal(swaps.apply(original)[0])


def run_counterfactual(model, items: list[dict], per_item: list[dict], swaps: SwapList, *, metrics: list[str],
                       labels: list[str] | None, max_new_tokens: int, batch_size: int, label: str, seed: int = 0,
                       n_resamples: int = 2000) -> dict:
    """Ask the swapped items, mark each original record, and return the side's `counterfactual` block."""
    from tuneforge.eval import registry
    from tuneforge.eval.pipeline import evaluate_task, prompt_text

    swapped = counterfactual_items(items, swaps, labels)
    records = {r["id"]: r for r in per_item}
    item_metrics = [m for m in registry.split_metrics(metrics)[0]]
    if labels:
        item_metrics = ["accuracy", *item_metrics]
    answered = []
    if swapped:
        task = evaluate_task(model, [cf for cf, _ in swapped], metrics=[m for m in item_metrics if m != "accuracy"],
                             labels=labels, max_new_tokens=max_new_tokens, batch_size=batch_size,
                             label=f"counterfactual, {label}")
        answered = task["per_item"]
    for (cf, matched), result in zip(swapped, answered):
        record = records[cf["id"]]
        if labels:
            changed = result.get("label") != record.get("label")
        else:
            changed = answer_changed(record["prediction"], result["prediction"], swaps)
        record["scores"][METRIC] = float(changed)
        record["counterfactual"] = {"prompt_text": prompt_text(cf), "reference": cf["reference"],
                                    "prediction": result["prediction"], "changed": changed,
                                    "pairs": sorted(matched),
                                    "scores": result["scores"], **({"label": result["label"]} if labels else {})}
    return counterfactual_summary(items, records, swaps, item_metrics, seed=seed, n_resamples=n_resamples)


def counterfactual_summary(items: list[dict], records: dict[str, dict], swaps: SwapList, metrics: list[str], *,
                           seed: int = 0, n_resamples: int = 2000) -> dict:
    """``{"swaps", "n_items", "n_applicable", "n_changed", "flip_rate": {mean, ci_low, ci_high, n} | None,
    "pairs": {pair: {flip_rate..., n}}, "score_change": {metric: paired delta and CI}, "examples": [...]}``."""
    from tuneforge.eval.bootstrap import bootstrap_mean, paired_bootstrap
    from tuneforge.eval.pipeline import prompt_text

    taking_part = [(item, records[item["id"]]) for item in items
                   if item["id"] in records and "counterfactual" in records[item["id"]]]
    flips = [r["scores"][METRIC] for _, r in taking_part]
    out: dict = {"swaps": swaps.source, "n_pairs": len(swaps.pair_labels), "n_items": len(items),
                 "n_applicable": len(taking_part), "n_changed": int(sum(flips)), "flip_rate": None, "pairs": {},
                 "score_change": {}, "examples": []}
    if not taking_part:
        return out
    out["flip_rate"] = bootstrap_mean(flips, seed=seed, n_resamples=n_resamples).to_dict()
    for name in swaps.pair_labels:
        chosen = [r["scores"][METRIC] for _, r in taking_part if name in r["counterfactual"]["pairs"]]
        if chosen:
            out["pairs"][name] = bootstrap_mean(chosen, seed=seed, n_resamples=n_resamples).to_dict()
    for metric in metrics:
        pairs = [(r["scores"][metric], r["counterfactual"]["scores"][metric]) for _, r in taking_part
                 if metric in r["scores"] and metric in r["counterfactual"]["scores"]]
        if pairs:
            result = paired_bootstrap([a for a, _ in pairs], [b for _, b in pairs], metric=metric, seed=seed,
                                      n_resamples=n_resamples)
            out["score_change"][metric] = {k: getattr(result, k) for k in ("mean_a", "mean_b", "delta", "ci_low",
                                                                             "ci_high", "n")}
    for item, record in taking_part:
        if record["counterfactual"]["changed"] and len(out["examples"]) < EXAMPLES:
            out["examples"].append({"id": item["id"], "prompt_text": prompt_text(item),
                                    "counterfactual_prompt_text": record["counterfactual"]["prompt_text"],
                                    "prediction": record["prediction"],
                                    "counterfactual_prediction": record["counterfactual"]["prediction"],
                                    "pairs": record["counterfactual"]["pairs"]})
    return out
