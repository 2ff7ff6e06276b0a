"""HTML report for a standalone `tuneforge eval`: one self-contained file next to results.json.

Built from results.json alone and reusing the run report's table helpers, chart and item diff, so the two
reports look alike. Everything from data or models (prompts, predictions, probe replies, judge reasons) is
HTML-escaped.
"""
from __future__ import annotations

from html import escape
from pathlib import Path

from tuneforge.report.charts import MetricBars, comparison_chart
from tuneforge.report.html import (
    CSS,
    failures_html,
    fmt,
    gates_html,
    items_diff,
    label_report_html,
    note,
    readable_prompt,
    section,
    table,
)

MAX_ROWS = 50


def _models_section(results: dict) -> str:
    models = results["models"]
    metrics = list(dict.fromkeys(m for side in models.values() for m in side["summary"]))
    rows = [[escape(m)] + [fmt(side["summary"].get(m)) if m in side["summary"] else "-" for side in models.values()]
            for m in metrics]
    body = table(["metric", *models], rows, numeric=set(range(1, len(models) + 1)))
    comp = results.get("comparison") or {}
    if comp:
        bars = [MetricBars(m, c["mean_a"], c["mean_b"], c["ci_low"], c["ci_high"]) for m, c in comp.items()]
        body += comparison_chart(bars, title="base vs tuned (whisker: 95% paired bootstrap CI of the delta)")
        body += table(["metric", "base", "tuned", "delta", "95% CI", "p (bootstrap)", "test", "p (test)", "n"],
                       [[escape(m), fmt(c["mean_a"]), fmt(c["mean_b"]), f"{c['delta']:+.4f}",
                         f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]", fmt(c["p_value"]),
                         escape(str(c.get("test", "-"))),
                         fmt(c.get("test_p_value")), str(c["n"])] for m, c in comp.items()],
                       numeric={1, 2, 3, 5, 7, 8})
    sources = "".join(f"<li>{escape(k)}: <code>{escape(str(v.get('source')))}</code></li>" for k, v in models.items())
    return section("Models and metrics", f"<ul>{sources}</ul>{body}", "models")


def _speed_section(results: dict) -> str:
    """Generation speed of each model, and for a GGUF file run in llama.cpp its size and tokens/s: what a quantised
    export buys, next to what it costs in the table above."""
    engine = results.get("engine") or {}
    rows = []
    for name, side in results["models"].items():
        if side.get("items_per_second") is None:
            continue
        mine = engine if name == "tuned" and engine else {}
        size = f"{mine['file_bytes'] / 2**20:.1f} MiB" if mine.get("file_bytes") else "-"
        rows.append([escape(name), escape(mine.get("engine", "transformers" if not str(side.get("source", ""))
                                                   .startswith("endpoint:") else "endpoint")),
                     fmt(side.get("task_seconds", side.get("seconds"))), fmt(side["items_per_second"]),
                     fmt(mine["tokens_per_second"]) if mine.get("tokens_per_second") else "-", size])
    if not rows:
        return ""
    return section("Speed and size", table(["model", "engine", "task seconds", "items/s", "generated tokens/s",
                                            "file"], rows, numeric={2, 3, 4}), "speed")


def _slices_section(results: dict) -> str:
    rows = []
    for name, side in results["models"].items():
        for slice_name, values in (side.get("slices") or {}).items():
            shown = ", ".join(f"{escape(k)} {fmt(v)}" for k, v in values.items())
            rows.append([escape(name), escape(slice_name), shown])
    if not rows:
        return ""
    return section("Slices", table(["model", "slice", "metrics"], rows), "slices")


def _labels_section(results: dict) -> str:
    parts = [label_report_html(name, side["label_report"]) for name, side in results["models"].items()
             if side.get("label_report")]
    return section("Label task", "".join(parts), "labels") if parts else ""


def _safety_section(results: dict) -> str:
    rows = []
    for item in results["items"]:
        if not str(item["id"]).startswith("probe:"):
            continue
        for name in results["models"]:
            record = item.get(name)
            if record and "outcome" in record:
                ok = record["outcome"]["safe"]
                rows.append([escape(item["id"]), escape(name), escape(str(item["reference"])),
                             f'<span class="{"good" if ok else "bad"}">{"ok" if ok else "FAIL"}</span>',
                             f"<pre>{escape(record['prediction'][:400])}</pre>"])
    if not rows:
        return ""
    caveat = note("refusals are detected by English phrase patterns; they miss other wordings and languages "
                 "(see tuneforge.eval.probes). Use the rate as a regression alarm, not a certification.")
    return section("Safety probes", caveat + table(["probe", "model", "expected", "result", "answer"], rows), "safety")


def _contamination_section(results: dict) -> str:
    data = results.get("contamination")
    if not data:
        return ""
    head = (f"<p>{data['n_flagged']} of {data['n_items']} items overlap <code>{escape(data['train_data'])}</code> "
            f"({data['ngram_n']}-gram or exact).</p>")
    rows = [[escape(i), escape(v["kind"]), fmt(v["share"]), str(v["train_line"]), escape(str(v.get("where")))]
            for i, v in list(data["items"].items())[:MAX_ROWS]]
    body = head + (table(["item", "kind", "share", "train line", "eval item"], rows) if rows else "")
    return section("Contamination", body, "contamination")


def _judge_section(results: dict) -> str:
    judge = results.get("judge")
    if not judge:
        return ""
    facts = {k: v for k, v in judge.items() if k not in ("rubric",)}
    body = note(f"the judge failed: {judge.get('error')}; the other scores stand") if judge.get("status") == "failed" \
        else ""
    body += f"<p>rubric: <code>{escape(str(judge.get('rubric', '-')))}</code></p>" + table(
        ["field", "value"], [[escape(k), fmt(v)] for k, v in facts.items()])
    return section("LLM judge", body, "judge")


def _task_items_section(results: dict) -> str:
    models = list(results["models"])
    rows = []
    for item in results["items"]:
        if str(item["id"]).startswith(("probe:", "general:")) or len(rows) >= MAX_ROWS:
            continue
        flag = ' <span class="bad">(in training data)</span>' if item.get("contamination") else ""
        rows.append([escape(str(item["id"])) + flag, f"<pre>{escape(readable_prompt(item.get('prompt_text')))}</pre>",
                     f"<pre>{escape(str(item['reference']))}</pre>"]
                    + [f"<pre>{escape(str((item.get(m) or {}).get('prediction', '')))}</pre>" for m in models])
    if not rows:
        return ""
    shown = f"<p class=\"muted\">first {len(rows)} task items</p>"
    return section("Task items", shown + table(["id", "prompt", "reference", *models], rows), "task-items")


def render_eval_report(results: dict, gates_path: Path | None = None) -> str:
    title = f"tuneforge eval: {results.get('task')}"
    notes = "".join(note(n) for n in results.get("notes") or [])
    task_rows = [i for i in results["items"] if not str(i["id"]).startswith(("probe:", "general:"))]
    failures = failures_html(task_rows, results.get("headline_metric"), results.get("metrics") or [])
    from tuneforge.report.fairness import cohorts_section, counterfactual_section, human_section

    parts = [gates_html(gates_path) if gates_path else "", _models_section(results), _speed_section(results),
             _slices_section(results),
             cohorts_section(results), counterfactual_section(results), human_section(results),
             _labels_section(results),
             _safety_section(results), _contamination_section(results), _judge_section(results),
             _task_items_section(results), section("Failures", failures, "failures") if task_rows else ""]
    if "base" in results["models"]:
        task_items = [i for i in task_rows if "base" in i and "tuned" in i]
        parts.append(section("Items where the models differ most",
                              items_diff(task_items, results.get("headline_metric")), "items"))
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head><body><header><h1>{escape(title)}</h1>"
            f"<p>{results['n_items']} items</p></header><main>{notes}{''.join(parts)}</main></body></html>")


def write_eval_report(results: dict, path: Path) -> Path:
    from tuneforge.atomic import write_text_atomic

    write_text_atomic(path, render_eval_report(results, Path(path).parent / "gates.json"))
    return path
