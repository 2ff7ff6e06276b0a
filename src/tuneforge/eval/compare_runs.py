"""Run against run: `tuneforge eval A --against B` compares two saved results.json files item by item.

Nothing is generated again. Each file's gated model ("tuned": a run's fine-tuned model, or the model an eval
evaluated) is one side; items are paired by id, and every metric with per-item scores on both sides (the task
metrics, the general set's `general_accuracy`, the probes' `refusal_rate` / `over_refusal_rate` /
`probe_accuracy`, a judge's `judge_score` ...) gets mean A, mean B and B - A with the paired bootstrap interval and
the paired significance test, through the same `pipeline.compare_sides` as base vs tuned (label tasks' macro-F1,
ECE and Brier included: they are recomputed on resampled items). So a positive delta means B is better on a
higher-is-better metric.

Pairing is strict:

* an id present in one file only is named in a warning (``only_in_a`` / ``only_in_b``) and left out of the pairs;
* the same id with a different prompt or reference in the two files is an error naming both files: those scores
  are not of the same item;
* no shared id at all is an error.

Metrics present on one side only, and summary-only figures (eval_loss, perplexity, corpus BLEU, cohort gaps ...),
are listed under ``left_out``.

comparison.json::

    {"format": "tuneforge run comparison 1", "side": "tuned", "seed",
     "a": {"label", "path", "source", "task", "n_items"}, "b": {...},
     "n_paired_items", "only_in_a": [ids], "only_in_b": [ids],
     "metrics": {metric: {mean_a, mean_b, delta, ci_low, ci_high, confidence, p_value, n, test, test_p_value}},
     "left_out": {"only_in_a": [metrics], "only_in_b": [metrics], "no_item_scores": [metrics]},
     "warnings": [...],
     "items": [{"id", "metric", "a", "b", "gain", "prompt_text", "reference", "prediction_a", "prediction_b"}]}

``items`` holds every paired item's headline-metric scores (the first compared per-item metric when the headline
has no per-item score), for the report's largest gains and losses.
"""
from __future__ import annotations

import re
from pathlib import Path

from rich.console import Console

from tuneforge.eval import pipeline, registry
from tuneforge.eval.gates import ResultsError

SIDE = "tuned"
FORMAT = "tuneforge run comparison 1"
SHOWN_IDS = 20  # ids named in the terminal warning; the JSON lists all of them


def label_for(path: Path) -> str:
    """A short name for a results file: the run's name for RUN/eval[/standalone]/results.json, else its folder."""
    folder = path.parent
    if folder.name == "standalone" and folder.parent.name == "eval":
        folder = folder.parent
    if folder.name == "eval":
        folder = folder.parent
    return folder.name or str(path)


def _rows(results: dict, path: Path) -> dict[str, dict]:
    """id -> item row, for the rows the gated model answered; a repeated id is an error (pairing would be
    ambiguous)."""
    rows: dict[str, dict] = {}
    for index, row in enumerate(results["items"]):
        if not isinstance(row, dict) or "id" not in row:
            raise ResultsError(f"{path}: items[{index}] has no 'id'")
        if not isinstance(row.get(SIDE), dict):
            continue
        key = str(row["id"])
        if key in rows:
            raise ResultsError(f"{path}: item id {key!r} appears twice in 'items'")
        rows[key] = row
    return rows


def _check_same_items(shared: list[str], rows_a: dict, rows_b: dict, path_a: Path, path_b: Path) -> None:
    for field in ("prompt_text", "reference"):
        differ = [i for i in shared
                  if field in rows_a[i] and field in rows_b[i] and rows_a[i][field] != rows_b[i][field]]
        if differ:
            first = differ[0]
            raise ResultsError(
                f"{path_a} and {path_b} hold different items under the same id: field '{field}' of item {first!r} "
                f"is {_short(rows_a[first][field])} in the first and {_short(rows_b[first][field])} in the second "
                f"({len(differ)} of {len(shared)} shared item(s) differ: {_names(differ)})",
                hint="compare results computed on the same test data (same file, same ids)")


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _names(ids: list[str], limit: int = SHOWN_IDS) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" ... and {len(ids) - limit} more" if len(ids) > limit else "")


def _item_metrics(rows: dict[str, dict], ids: list[str]) -> list[str]:
    return list(dict.fromkeys(m for i in ids for m in (rows[i][SIDE].get("scores") or {})))


def _label_metrics(results: dict) -> list[str]:
    """Corpus label statistics (macro-F1, ECE, Brier) the results hold: recomputed per resample from labels."""
    report = results["models"].get(SIDE, {}).get("label_report") or {}
    if not report.get("labels"):
        return []
    summary = results["models"][SIDE].get("summary") or {}
    return [m for m in summary if m in registry.REGISTRY and registry.get(m).kind == "label"]


def compare_results(path_a: Path, path_b: Path, *, seed: int = 0, n_resamples: int = 10000,
                    labels: tuple[str, str] | None = None) -> dict:
    """The comparison document (layout in the module docstring) of two results.json files."""
    path_a, path_b = Path(path_a), Path(path_b)
    results_a = pipeline.read_results(path_a, items=True)
    results_b = pipeline.read_results(path_b, items=True)
    for path, results in ((path_a, results_a), (path_b, results_b)):
        if not isinstance(results["models"].get(SIDE), dict):
            raise ResultsError(f"{path}: field 'models' has no {SIDE!r} model to compare")
    rows_a, rows_b = _rows(results_a, path_a), _rows(results_b, path_b)
    shared = [i for i in rows_a if i in rows_b]
    only_a = [i for i in rows_a if i not in rows_b]
    only_b = [i for i in rows_b if i not in rows_a]
    if not shared:
        raise ResultsError(f"{path_a} ({len(rows_a)} items) and {path_b} ({len(rows_b)} items) share no item id",
                           hint="compare results computed on the same test data")
    _check_same_items(shared, rows_a, rows_b, path_a, path_b)

    scored_a, scored_b = _item_metrics(rows_a, shared), _item_metrics(rows_b, shared)
    label_a, label_b = _label_metrics(results_a), _label_metrics(results_b)
    task_labels = results_a["models"][SIDE]["label_report"]["labels"] if label_a else None
    if label_a and label_b and task_labels != results_b["models"][SIDE]["label_report"]["labels"]:
        label_a = label_b = []  # different label sets: the corpus statistics are not comparable
    summary_a = results_a["models"][SIDE].get("summary") or {}
    summary_b = results_b["models"][SIDE].get("summary") or {}
    pairable_a, pairable_b = list(dict.fromkeys(scored_a + label_a)), set(scored_b + label_b)
    metrics = [m for m in pairable_a if m in pairable_b]
    every_a = list(dict.fromkeys([*pairable_a, *summary_a]))
    every_b = list(dict.fromkeys([*pairable_b, *summary_b]))
    left_out = {"only_in_a": [m for m in every_a if m not in every_b],
                "only_in_b": [m for m in every_b if m not in every_a],
                "no_item_scores": [m for m in every_a if m in every_b and m not in metrics]}

    def side(rows: dict) -> dict:
        return {"per_item": [{"id": i, **rows[i][SIDE]} for i in shared]}

    comparison = pipeline.compare_sides(side(rows_a), side(rows_b), metrics, seed=seed, n_resamples=n_resamples,
                                        labels=task_labels,
                                        items=[{"id": i, "reference": rows_a[i].get("reference")} for i in shared])
    left_out["no_item_scores"] += [m for m in metrics if m not in comparison]  # ECE without probabilities
    warnings = []
    names = labels or (label_for(path_a), label_for(path_b))
    for name, path, ids in ((names[0], path_a, only_a), (names[1], path_b, only_b)):
        if ids:
            warnings.append(f"{len(ids)} item(s) only in {name} ({path}), not compared: {_names(ids)}")
    for key, name in (("only_in_a", names[0]), ("only_in_b", names[1])):
        if left_out[key]:
            warnings.append(f"metric(s) only in {name}, not compared: {', '.join(left_out[key])}")
    if left_out["no_item_scores"]:
        warnings.append("figure(s) without per-item scores on both sides, not compared: "
                        + ", ".join(left_out["no_item_scores"]))
    if not comparison:
        raise ResultsError(f"{path_a} and {path_b} share {len(shared)} item(s) but no metric scored per item on both",
                           hint=f"per-item metrics in the first: {', '.join(scored_a) or 'none'}; in the second: "
                                f"{', '.join(scored_b) or 'none'}")

    def facts(name: str, path: Path, results: dict, rows: dict) -> dict:
        return {"label": name, "path": str(path), "source": results["models"][SIDE].get("source"),
                "task": results.get("task"), "n_items": len(rows)}

    return {"format": FORMAT, "side": SIDE, "seed": seed,
            "a": facts(names[0], path_a, results_a, rows_a), "b": facts(names[1], path_b, results_b, rows_b),
            "n_paired_items": len(shared), "only_in_a": only_a, "only_in_b": only_b, "metrics": comparison,
            "left_out": left_out, "warnings": warnings,
            "items": _item_gains(shared, rows_a, rows_b, results_a.get("headline_metric"),
                                  [m for m in comparison if m in scored_a and m in scored_b])}


def _item_gains(shared: list[str], rows_a: dict, rows_b: dict, headline: str | None, scored: list[str]) -> list[dict]:
    """Per shared item, the headline metric's B - A (for the report's largest gains and losses)."""
    if not scored:
        return []
    metric = headline if headline in scored else scored[0]
    out = []
    for i in shared:
        score_a = (rows_a[i][SIDE].get("scores") or {}).get(metric)
        score_b = (rows_b[i][SIDE].get("scores") or {}).get(metric)
        if score_a is None or score_b is None:
            continue
        out.append({"id": i, "metric": metric, "a": score_a, "b": score_b, "gain": score_b - score_a,
                    "prompt_text": rows_a[i].get("prompt_text"), "reference": rows_a[i].get("reference"),
                    "prediction_a": rows_a[i][SIDE].get("prediction"),
                    "prediction_b": rows_b[i][SIDE].get("prediction")})
    return out


def default_out(path_a: Path, label_b: str) -> Path:
    """Beside A's results.json: compare-<B>/."""
    return Path(path_a).parent / f"compare-{re.sub(r'[^A-Za-z0-9._-]+', '-', label_b).strip('-') or 'b'}"


def print_comparison(doc: dict, console: Console) -> None:
    from rich.markup import escape
    from rich.table import Table

    a, b = doc["a"]["label"], doc["b"]["label"]
    table = Table(title=f"{escape(a)} (A) vs {escape(b)} (B): {doc['n_paired_items']} paired items")
    for column in ("metric", "n", f"A: {a}", f"B: {b}", "B - A", "95% CI", "p (bootstrap)", "test", "p (test)"):
        table.add_column(escape(column), justify="left" if column in ("metric", "test") else "right")
    for metric, c in doc["metrics"].items():
        test_p = c.get("test_p_value")
        table.add_row(escape(metric), str(c["n"]), f"{c['mean_a']:.3f}", f"{c['mean_b']:.3f}", f"{c['delta']:+.3f}",
                      f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]", f"{c['p_value']:.4f}",
                      escape(str(c.get("test") or "-")), "-" if test_p is None else f"{test_p:.4f}")
    console.print(table)
    for warning in doc["warnings"]:
        console.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False)
