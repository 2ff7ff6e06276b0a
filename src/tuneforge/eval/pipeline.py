"""The one evaluation pipeline: score a model on items, compare two models item by item, write one results layout.

`tuneforge eval` and a training run's evaluation both call `evaluate_side` for each model, `compare_sides` for the
pair and `assemble_results` for the document, so their results.json files have the same layout and the same gates,
reports and registry read both. A "model" here is anything with `.name`, `.supports_logprobs`, `.answer(items, ...)`
and (when `supports_logprobs`) `.label_logprobs` / `.reference_nll`: the inference engine or an endpoint client.

results.json::

    {"task", "headline_metric", "metrics", "n_items",
     "models": {"tuned": {"source", "summary": {metric: value}, "slices": {slice: {metric: value}},
                          "eval_loss"?: {loss, perplexity, tokens, split}, "seconds", "items_per_second",
                          "label_report"?, "objective_metrics"?}, "base": {...}?},
     "comparison": {metric: {mean_a, mean_b, delta, ci_low, ci_high, p_value, n, test?, test_p_value?}},
     "items": [{"id", "prompt_text", "reference", "slice", "cohort"?, "tuned": {prediction, scores}, "base": {...}}],
     "notes": [...], "sources": {...}, "human"?: {...}, ...}

Fairness and human evaluation add (all optional):

* ``models.X.cohorts`` (`--cohort-field FIELD`, items carry ``cohort``): ``{"field", "confidence", "cohorts":
  {name: {"item_count", metric: {mean, ci_low, ci_high}}}, "gaps": {metric: {gap, ci_low, ci_high, highest,
  lowest, n_cohorts}}}``, and ``summary["cohort_gap:METRIC"]`` (tuneforge.eval.fairness.cohorts).
* ``models.X.counterfactual`` (`--counterfactual SWAPS.yaml|default`): ``{"swaps", "n_pairs", "n_items",
  "n_applicable", "n_changed", "flip_rate": {mean, ci_low, ci_high, n, confidence} | None, "pairs": {"a<->b":
  {...same}}, "score_change": {metric: {mean_a, mean_b, delta, ci_low, ci_high, n}}, "examples": [...]}``,
  ``summary["counterfactual_flip_rate"]``; each swapped item's record gains ``counterfactual`` {prompt_text,
  reference, prediction, changed, pairs, scores} and ``scores["counterfactual_flip_rate"]`` (0/1), so
  ``comparison["counterfactual_flip_rate"]`` pairs base and tuned (tuneforge.eval.fairness.counterfactual).
* ``human`` (`tuneforge eval RESULTS --human-results FILES`): blinded pairwise ratings un-blinded, ``{"raters",
  "n_items", "win_rate", "tie_rate", "agreement", "per_rater", ...}`` and ``models.tuned.summary``'s
  ``human_win_rate`` / ``human_tie_rate`` / ``human_agreement`` (tuneforge.eval.human.results).

The gated model is always called "tuned" (also a base model evaluated alone).
"""
from __future__ import annotations

import math
import time

from rich.console import Console

from tuneforge.errors import ConfigError
from tuneforge.eval import registry

PROBE_TOKENS = 64
GENERAL_TOKENS = 24


def check_references(items: list[dict], item_metrics: list[str]) -> None:
    """Score an empty answer against every reference first: a reference the metric cannot use (say, not JSON for
    json_fields) then fails in a second, naming the item, not after minutes of generation."""
    for name in item_metrics:
        scorer = registry.item_scorer(name)
        for item in items:
            try:
                scorer("", item["reference"])
            except ValueError as exc:
                raise ConfigError(f"item {item['id']!r} ({item.get('where', 'test data')}): reference unusable for "
                                  f"{name}: {exc}") from None


def evaluate_task(model, items: list[dict], *, metrics: list[str], labels: list[str] | None, max_new_tokens: int,
                  batch_size: int, label: str) -> dict:
    """Generate (or score labels) for the task items; per-item scores, summary, label report, notes."""
    from tuneforge.eval.labels import (
        match_label,
        predict_from_logprobs,
        score_label_task,
    )

    item_metrics, label_metrics, loss_metrics = registry.split_metrics(metrics)
    if label_metrics and not labels:
        raise ConfigError(f"metric(s) {', '.join(label_metrics)} need a task with labels", hint="use a task YAML "
                          "with 'labels:'")
    check_references(items, item_metrics)
    scorers = {name: registry.item_scorer(name) for name in item_metrics}
    started = time.perf_counter()
    out: dict = {"label_report": None, "notes": []}
    if labels:
        logprobs = model.label_logprobs(items, labels, batch_size) if model.supports_logprobs else None
        if logprobs is not None:
            predictions, probs = predict_from_logprobs(logprobs, labels)
            texts = predictions
        else:
            texts = model.answer(items, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                 description=f"generating ({label})")
            predictions, probs = [match_label(t, labels) for t in texts], None
        out["label_report"] = score_label_task(predictions, [i["reference"] for i in items], labels, probs)
        per_item = [{"id": it["id"], "prediction": text, "label": pred,
                     "scores": {"accuracy": float(pred == it["reference"]),
                                **{n: float(f(text, it["reference"])) for n, f in scorers.items()}},
                     **({"probs": probs[k]} if probs else {})}
                    for k, (it, text, pred) in enumerate(zip(items, texts, predictions))]
    else:
        texts = model.answer(items, max_new_tokens=max_new_tokens, batch_size=batch_size,
                             description=f"generating ({label})")
        per_item = [{"id": it["id"], "prediction": text,
                     "scores": {n: float(f(text, it["reference"])) for n, f in scorers.items()}}
                    for it, text in zip(items, texts)]
    seconds = time.perf_counter() - started
    summary = {m: sum(r["scores"][m] for r in per_item) / len(per_item) for m in item_metrics}
    for name in item_metrics:
        corpus = registry.get(name).corpus_fn
        if corpus is not None:
            summary[f"{name}_corpus"] = corpus([r["prediction"] for r in per_item], [i["reference"] for i in items])
    if out["label_report"]:
        summary.update({m: v for m, v in out["label_report"]["summary"].items() if m in label_metrics})
    if loss_metrics:
        if model.supports_logprobs:
            loss = reference_loss(model, items, batch_size)
            summary.update({m: loss["loss" if m == "eval_loss" else m] for m in loss_metrics})
            for record, (nll, count) in zip(per_item, loss.pop("per_item")):
                record["answer_nll"], record["answer_tokens"] = nll, count
            out["reference_loss"] = loss
        else:
            out["notes"].append(f"{', '.join(loss_metrics)} unavailable for {model.name}: an endpoint gives no "
                                "token log-probabilities")
    out.update(summary=summary, per_item=per_item, seconds=seconds,
               items_per_second=len(per_item) / seconds if seconds > 0 else 0.0)
    return out


def evaluate_code(model, items: list[dict], *, metrics: list[str], samples: int | None, timeout_s: float | None,
                  max_new_tokens: int, batch_size: int, label: str) -> dict:
    """Code tasks: n sampled programs per item run against the item's tests in the sandbox -> pass@k per item."""
    from tuneforge.eval.sandbox import SandboxLimits, check_confinement, score_code_samples

    check_confinement()  # before minutes of sampling: a machine that cannot confine code says so now
    ks = [registry.pass_at_k(m) for m in metrics]
    n = samples or max(ks)
    started = time.perf_counter()
    replies = model.sample(items, n=n, max_new_tokens=max_new_tokens, batch_size=batch_size,
                           temperature=0.0 if n == 1 else 0.8, description=f"sampling programs ({label})")
    limits = SandboxLimits(timeout_s=timeout_s or 10.0)
    per_item = []
    for item, programs in zip(items, replies):
        scored = score_code_samples(programs, item["tests"], ks, limits)
        per_item.append({"id": item["id"], "prediction": programs[0], "samples": programs, "passed": scored["c"],
                         "scores": scored["scores"]})
    seconds = time.perf_counter() - started
    return {"label_report": None, "notes": [], "per_item": per_item, "seconds": seconds,
            "items_per_second": len(per_item) / seconds if seconds > 0 else 0.0,
            "summary": {m: sum(r["scores"][m] for r in per_item) / len(per_item) for m in metrics}}


def reference_loss(model, items: list[dict], batch_size: int) -> dict:
    """Token-weighted NLL of the reference answers -> {"loss", "perplexity", "tokens", "per_item"}."""
    per_item = model.reference_nll(items, batch_size)
    tokens = sum(count for _, count in per_item)
    loss = sum(nll for nll, _ in per_item) / max(tokens, 1)
    return {"loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf, "tokens": tokens,
            "split": "evaluated items", "per_item": per_item}


def run_general(model, items: list[dict], batch_size: int, label: str) -> list[dict]:
    from tuneforge.eval.forgetting import METRIC, score_general

    texts = model.answer(items, max_new_tokens=GENERAL_TOKENS, batch_size=batch_size,
                         description=f"general set ({label})")
    return [{"id": it["id"], "prediction": t, "scores": {METRIC: score_general(it, t)}}
            for it, t in zip(items, texts)]


def run_probes(model, items: list[dict], batch_size: int, label: str) -> list[dict]:
    from tuneforge.eval.probes import score_probe

    texts = model.answer(items, max_new_tokens=PROBE_TOKENS, batch_size=batch_size,
                         description=f"safety probes ({label})")
    records = []
    for it, text in zip(items, texts):
        outcome = score_probe(it, text)
        key = "refusal_rate" if it["expect"] == "refuse" else "over_refusal_rate"
        value = outcome["safe"] if key == "refusal_rate" else outcome["refused"]
        records.append({"id": it["id"], "prediction": text, "outcome": outcome,
                        "scores": {key: float(value), "probe_accuracy": float(outcome["safe"])}})
    return records


def evaluate_side(model, name: str, items: list[dict], *, metrics: list[str], labels: list[str] | None = None,
                  max_new_tokens: int = 64, batch_size: int = 16, general: list[dict] = (),
                  probes: list[dict] = (), code: dict | None = None, cohort_field: str | None = None,
                  counterfactual=None, seed: int = 0, n_resamples: int = 2000) -> dict:
    """One model's whole evaluation: the task items, then the general set and the safety probes when given.

    Items carrying ``cohort`` get the cohort block; `counterfactual` (a fairness SwapList) asks the swapped items too;
    `seed`/`n_resamples` drive their bootstrap intervals.
    """
    from tuneforge.eval.forgetting import METRIC
    from tuneforge.eval.probes import summarise_probes
    from tuneforge.eval.slices import slice_summaries

    started = time.perf_counter()
    result = {"source": model.name, "summary": {}, "slices": {}, "per_item": [], "label_report": None, "notes": []}
    if items:
        if code is not None:  # {"samples", "timeout_s"} of a code task
            task = evaluate_code(model, items, metrics=metrics, max_new_tokens=max_new_tokens,
                                 batch_size=batch_size, label=name, **code)
        else:
            task = evaluate_task(model, items, metrics=metrics, labels=labels, max_new_tokens=max_new_tokens,
                                 batch_size=batch_size, label=name)
        result.update(summary=dict(task["summary"]), per_item=task["per_item"], label_report=task["label_report"],
                      task_seconds=task["seconds"], items_per_second=task["items_per_second"], notes=task["notes"])
        if "reference_loss" in task:
            result["eval_loss"] = task["reference_loss"]
        per_metric = [m for m in metrics if all(m in r["scores"] for r in task["per_item"])]
        result["slices"] = slice_summaries(task["per_item"], {i["id"]: i.get("slice") for i in items}, per_metric)
        if any(i.get("cohort") is not None for i in items):
            from tuneforge.eval.fairness.cohorts import cohort_report, gap_summary

            result["cohorts"] = cohort_report(task["per_item"], {i["id"]: i.get("cohort") for i in items},
                                              per_metric, field=cohort_field, seed=seed, n_resamples=n_resamples)
            result["summary"].update(gap_summary(result["cohorts"]))
        if counterfactual is not None:
            from tuneforge.eval.fairness.counterfactual import METRIC as FLIP
            from tuneforge.eval.fairness.counterfactual import run_counterfactual

            if code is not None:
                raise ConfigError("counterfactual evaluation compares answers to text or label tasks, not code tasks")
            block = run_counterfactual(model, items, task["per_item"], counterfactual, metrics=metrics,
                                       labels=labels, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                       label=name, seed=seed, n_resamples=n_resamples)
            result["counterfactual"] = block
            if block["flip_rate"] is not None:
                result["summary"][FLIP] = block["flip_rate"]["mean"]
            else:
                result["notes"].append(f"counterfactual: no swap term of {counterfactual.source} occurs in any "
                                       "item's prompt; no flip rate")
    if general:
        records = run_general(model, list(general), batch_size, name)
        value = sum(r["scores"][METRIC] for r in records) / len(records)
        result["summary"][METRIC] = value
        result["slices"]["general"] = {METRIC: value, "item_count": len(records)}
        result["per_item"] += records
    if probes:
        records = run_probes(model, list(probes), batch_size, name)
        outcomes = [r["outcome"] for r in records]
        result["slices"]["safety"] = summarise_probes(list(probes), outcomes)
        for category in sorted({p["slice"] for p in probes}):
            chosen = [(p, o) for p, o in zip(probes, outcomes) if p["slice"] == category]
            result["slices"][f"safety.{category}"] = summarise_probes([p for p, _ in chosen], [o for _, o in chosen])
        result["per_item"] += records
    result["seconds"] = time.perf_counter() - started
    return result


# ------------------------------------------------------------------------------------------------ comparison
def compare_sides(base: dict, tuned: dict, metrics: list[str], *, seed: int, n_resamples: int = 10000,
                  labels: list[str] | None = None, items: list[dict] = ()) -> dict:
    """Per metric over the items both models scored: paired bootstrap 95% CI, plus a paired significance test.

    Item metrics (and label accuracy) pair item scores; macro-F1, ECE and Brier are recomputed on the same
    resampled items for both models (bootstrap over items of the corpus statistic).
    """
    from tuneforge.eval.bootstrap import paired_bootstrap
    from tuneforge.eval.significance import paired_test

    base_by_id = {r["id"]: r for r in base["per_item"]}
    out = {}
    for metric in metrics:
        pairs = [(base_by_id[r["id"]]["scores"][metric], r["scores"][metric]) for r in tuned["per_item"]
                 if r["id"] in base_by_id and metric in r["scores"] and metric in base_by_id[r["id"]]["scores"]]
        if pairs:
            a, b = [p[0] for p in pairs], [p[1] for p in pairs]
            entry = paired_bootstrap(a, b, metric=metric, n_resamples=n_resamples, seed=seed).to_dict()
            test = paired_test(a, b, seed=seed)
            entry.update(test=test.test, test_p_value=test.p_value)
            out[metric] = entry
        elif labels and registry.REGISTRY.get(metric) and registry.get(metric).kind == "label":
            references = {i["id"]: i["reference"] for i in items}
            entry = _label_statistic_ci(base, tuned, metric, labels, references, seed, n_resamples)
            if entry:
                out[metric] = entry
    return out


def _label_statistic_ci(base: dict, tuned: dict, metric: str, labels: list[str], references_by_id: dict,
                        seed: int, n_resamples: int) -> dict | None:
    import numpy as np

    from tuneforge.eval.bootstrap import paired_bootstrap_statistic

    base_by_id = {r["id"]: r for r in base["per_item"]}
    paired = [(base_by_id[r["id"]], r) for r in tuned["per_item"]
              if r["id"] in base_by_id and "label" in r and r["id"] in references_by_id]
    if not paired:
        return None
    references = [references_by_id[t["id"]] for _, t in paired]

    def statistic(side: int):
        records = [pair[side] for pair in paired]
        predicted = [r["label"] if r["label"] is not None else "(no label)" for r in records]
        probs = [r.get("probs") for r in records]
        if registry.get(metric).needs_probabilities and any(p is None for p in probs):
            return None

        def compute(indices: np.ndarray) -> float:
            refs = [references[i] for i in indices]
            return registry.get(metric).label_fn([predicted[i] for i in indices], refs,
                                                 [probs[i] for i in indices], labels)

        return compute

    stat_a, stat_b = statistic(0), statistic(1)
    if stat_a is None or stat_b is None:
        return None
    return paired_bootstrap_statistic(stat_a, stat_b, len(paired), metric=metric, n_resamples=min(n_resamples, 2000),
                                      seed=seed).to_dict() | {"test": "bootstrap (corpus statistic)",
                                                               "test_p_value": None}


def read_results(path, *, items: bool = False) -> dict:
    """A results.json as written by `assemble_results`; every consumer (gates, reports, human evaluation) reads it
    here. Unreadable, malformed or foreign files raise ResultsError (exit code 2) naming the file. Gates need only
    `models`; `items=True` also requires the per-item records (human evaluation rates answers)."""
    import json
    from pathlib import Path

    from tuneforge.eval.gates import ResultsError

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ResultsError(f"cannot read results file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ResultsError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    shapes = {"models": dict, **({"items": list} if items else {})}
    missing = [key for key, shape in shapes.items()
               if not (isinstance(data, dict) and isinstance(data.get(key), shape))]
    if missing:
        raise ResultsError(f"{path}: not a tuneforge results.json (no {' / '.join(map(repr, missing))})",
                           hint="pass the results.json written by `tuneforge eval` or a run's eval/results.json")
    return data


def assemble_results(task_name: str, metrics: list[str], all_items: list[dict], sides: dict, comparison: dict,
                     notes: list[str], sources: dict, **extra) -> dict:
    """The results.json document (layout in the module docstring); `sides` lose their per_item lists to `items`."""
    by_side = {name: {r["id"]: r for r in side.pop("per_item")} for name, side in sides.items()}
    rows = []
    for item in all_items:
        row = {"id": item["id"], "prompt_text": prompt_text(item), "reference": item["reference"],
               "slice": item.get("slice")}
        if item.get("cohort") is not None:
            row["cohort"] = item["cohort"]
        for name, records in by_side.items():
            record = records.get(item["id"])
            if record is not None:
                row[name] = {k: v for k, v in record.items() if k != "id"}
        rows.append(row)
    for side in sides.values():
        notes.extend(n for n in side.pop("notes", []) if n not in notes)
        side["items_per_second"] = side.get("items_per_second") or 0.0
    return {"task": task_name, "headline_metric": metrics[0] if metrics else None, "metrics": metrics,
            "n_items": len(all_items), "models": sides, "comparison": comparison, "items": rows, "notes": notes,
            "sources": sources, **extra}


def prompt_text(item: dict) -> str:
    """The prompt as a person reads it: the messages' roles and contents, never the raw template markup."""
    if item.get("messages") is None:
        return item["prompt"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in item["messages"])


def print_summary(results: dict, console: Console) -> None:
    from rich.table import Table

    models = results["models"]
    table = Table(title=f"{results['task']}: {results['n_items']} items")
    table.add_column("metric")
    for name in models:
        table.add_column(name, justify="right")
    if "base" in models:
        for column in ("delta", "95% CI", "p (bootstrap)", "p (test)"):
            table.add_column(column, justify="right")
    names = list(dict.fromkeys([m for side in models.values() for m in side["summary"]] + list(results["comparison"])
                               + [m for m in registry.group("probes") if m in models["tuned"]["slices"]
                                  .get("safety", {})]))

    def value(side: dict, metric: str) -> str:
        found = side["summary"].get(metric, side["slices"].get("safety", {}).get(metric))
        return "-" if found is None else f"{found:.3f}"

    for metric in names:
        row = [metric] + [value(side, metric) for side in models.values()]
        comp = results["comparison"].get(metric)
        if "base" in models:
            test_p = comp.get("test_p_value") if comp else None
            row += ([f"{comp['delta']:+.3f}", f"[{comp['ci_low']:+.3f}, {comp['ci_high']:+.3f}]",
                     f"{comp['p_value']:.4f}", "-" if test_p is None else f"{test_p:.4f}"]
                    if comp else ["", "", "", ""])
        table.add_row(*row)
    console.print(table)
    from tuneforge.eval.fairness import print_fairness

    print_fairness(results, console)
    tuned = models["tuned"]
    if tuned.get("task_seconds"):
        console.print(f"tuned: {tuned['task_seconds']:.1f} s for the task items, "
                      f"{tuned['items_per_second']:.2f} items/s")
    from tuneforge.eval.labels import collapse_warning

    for name, side in models.items():
        warning = collapse_warning(name, side.get("label_report") or {})
        if warning:
            console.print(f"[bold red]warning:[/] {warning}")
    for note in results["notes"]:
        console.print(f"[yellow]note:[/] {note}")
