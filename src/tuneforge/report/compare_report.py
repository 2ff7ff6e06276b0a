"""HTML report of a run-vs-run comparison (`tuneforge eval A --against B`): one self-contained file.

Built from the comparison document alone (tuneforge.eval.compare_runs) with the eval report's table helpers and
chart; everything from data or models (ids, prompts, predictions, labels) is HTML-escaped.
"""
from __future__ import annotations

from html import escape
from pathlib import Path

from tuneforge.report.charts import MetricBars, comparison_chart
from tuneforge.report.html import CSS, fmt, note, readable_prompt, section, table

ITEMS_EACH_WAY = 10


def _metrics_section(doc: dict) -> str:
    a, b = doc["a"]["label"], doc["b"]["label"]
    comp = doc["metrics"]
    bars = [MetricBars(m, c["mean_a"], c["mean_b"], c["ci_low"], c["ci_high"]) for m, c in comp.items()]
    chart = comparison_chart(bars, title=f"A ({a}) vs B ({b}) (whisker: 95% paired bootstrap CI of B - A)",
                             names=(f"A {a}", f"B {b}"))
    rows = [[escape(m), str(c["n"]), fmt(c["mean_a"]), fmt(c["mean_b"]), f"{c['delta']:+.4f}",
             f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]", fmt(c["p_value"]), escape(str(c.get("test") or "-")),
             fmt(c.get("test_p_value"))] for m, c in comp.items()]
    body = chart + table(["metric", "n", f"A: {a}", f"B: {b}", "B - A", "95% CI", "p (bootstrap)", "test",
                          "p (test)"], rows, numeric={1, 2, 3, 4, 6, 8})
    return section("Metrics (paired by item id)", body, "metrics")


def _sources_section(doc: dict) -> str:
    rows = [[key.upper(), escape(str(s["label"])), f"<code>{escape(s['path'])}</code>", escape(str(s.get("source"))),
             escape(str(s.get("task"))), str(s["n_items"])] for key, s in (("a", doc["a"]), ("b", doc["b"]))]
    body = table(["side", "name", "results", "model", "task", "items"], rows, numeric={5})
    body += (f"<p>{doc['n_paired_items']} items in both; each file's {escape(doc['side'])} model is compared "
             "(B - A: positive means B scores higher).</p>")
    return section("Results compared", body, "sources")


def _items_section(doc: dict) -> str:
    scored = doc.get("items") or []
    if not scored:
        return ""
    metric = scored[0]["metric"]
    parts = []
    gains = sorted((s for s in scored if s["gain"] > 0), key=lambda s: (-s["gain"], s["id"]))[:ITEMS_EACH_WAY]
    losses = sorted((s for s in scored if s["gain"] < 0), key=lambda s: (s["gain"], s["id"]))[:ITEMS_EACH_WAY]
    for title, chosen in (("B better", gains), ("B worse", losses)):
        parts.append(f"<h3>{escape(title)} on {escape(metric)}</h3>")
        if not chosen:
            parts.append('<p class="muted">none</p>')
            continue
        rows = [[escape(s["id"]), f"<pre>{escape(readable_prompt(s.get('prompt_text')))}</pre>",
                 f"<pre>{escape(str(s.get('reference', '')))}</pre>",
                 f"<pre>{escape(str(s.get('prediction_a') or ''))}</pre>",
                 f"<pre>{escape(str(s.get('prediction_b') or ''))}</pre>", f"{s['gain']:+.4f}"] for s in chosen]
        parts.append(table(["id", "prompt", "reference", "A", "B", "B - A"], rows, numeric={5}))
    return section("Items where the runs differ most", "".join(parts), "items")


def render_comparison_report(doc: dict) -> str:
    title = f"tuneforge compare: {doc['a']['label']} vs {doc['b']['label']}"
    warnings = "".join(note(w) for w in doc.get("warnings") or [])
    parts = [_sources_section(doc), _metrics_section(doc), _items_section(doc)]
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head><body><header><h1>{escape(title)}</h1>"
            f"<p>{doc['n_paired_items']} paired items</p></header><main>{warnings}{''.join(parts)}</main>"
            "</body></html>")


def write_comparison_report(doc: dict, path: Path) -> Path:
    from tuneforge.atomic import write_text_atomic

    write_text_atomic(path, render_comparison_report(doc))
    return path
