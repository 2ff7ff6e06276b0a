"""audit.json -> a self-contained audit.html: inline SVG charts, no scripts, no external assets.

Every string that came from the data (lines of text, masked PII, file names) goes through html.escape:
the report is opened in a browser, and training data is exactly where hostile markup turns up.
"""
from __future__ import annotations

import html
import json
from typing import Any

from tuneforge.report.charts import histogram_chart

_BAR = "#4a7fb5"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def bar_chart(labels: list[str], values: list[float], *, width: int = 640, height: int = 220) -> str:
    """Vertical bars for categories (PII types, cluster sizes, labels); numeric axes use report.charts."""
    if not values:
        return "<p><em>no data</em></p>"
    top = max(values) or 1
    pad, plot_h = 30, height - 50
    bar_w = (width - 2 * pad) / len(values)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    for k, (label, value) in enumerate(zip(labels, values)):
        h = plot_h * value / top
        x = pad + k * bar_w
        parts.append(f'<rect x="{x:.1f}" y="{10 + plot_h - h:.1f}" width="{max(bar_w - 1, 1):.1f}" height="{h:.1f}" '
                     f'fill="{_BAR}"><title>{_e(label)}: {_e(value)}</title></rect>')
        parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - 22}" font-size="11" text-anchor="middle">'
                     f'{_e(label)}</text>')
    parts.append(f'<text x="2" y="12" font-size="11">{_e(int(top))}</text></svg>')
    return "".join(parts)


def _table(headers: list[str], rows: list[list[Any]], limit: int = 50) -> str:
    if not rows:
        return "<p><em>none found</em></p>"
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows[:limit])
    more = f"<p>... and {len(rows) - limit} more (see audit.json)</p>" if len(rows) > limit else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def _lines(lines: list[int]) -> str:
    shown = ", ".join(map(str, lines[:12]))
    return shown + (f" (+{len(lines) - 12})" if len(lines) > 12 else "")


def render_html(report: dict) -> str:
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>tuneforge data audit</title><style>",
           "body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}table{border-collapse:collapse}",
           "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}h2{margin-top:1.6em}",
           "</style></head><body><h1>Data audit</h1>"]
    out.append("<h2>Sources</h2>" + _table(["split", "path", "format", "file type", "rows", "sha256"],
               [[k, v["path"], v["format"], v["file_type"], v["rows"], v["sha256"][:16]]
                for k, v in report["sources"].items()]))
    tokens = report.get("tokens")
    if tokens:
        hist = tokens["histogram"]
        markers = [(tokens["max_length"], f"max length {tokens['max_length']}")]
        if tokens.get("context_window"):
            markers.append((tokens["context_window"], f"context window {tokens['context_window']}"))
        out.append(f"<h2>Token lengths ({_e(report.get('model'))})</h2>")
        out.append(histogram_chart(hist["edges"], hist["counts"], markers=markers, title="rows by token length",
                                   x_label="tokens per row"))
        out.append(_table(["field", "P50", "P95", "P99", "max"],
                          [[k, v.get("p50"), v.get("p95"), v.get("p99"), v.get("max")]
                           for k, v in tokens["fields"].items()]))
        out.append(f"<p>{tokens['over_max_length']} rows exceed max length {tokens['max_length']}; truncation loses "
                   f"{tokens['trained_tokens_lost_to_truncation']} trained tokens "
                   f"({tokens['lost_trained_share']:.2%} of "
                   f"{tokens['trained_tokens']}). Trained-token ratio {tokens['trained_token_ratio']:.2%}.</p>")
    pii = report["pii"]
    out.append("<h2>Personal data</h2>" + bar_chart(list(pii["counts"]), list(pii["counts"].values())))
    out.append(_table(["type", "line", "field", "masked example"],
                      [[t, ex["line"], ex.get("field", ""), ex["masked"]]
                       for t, exs in pii["examples"].items() for ex in exs]))
    if pii.get("fields_scanned"):
        out.append(f"<p>Fields scanned: {_e(', '.join(pii['fields_scanned']))}</p>")
    dup = report["duplicates"]
    out.append(f"<h2>Duplicates</h2><p>{dup['exact_groups']} exact groups ({dup['exact_extra_rows']} extra rows), "
               f"{dup['near_clusters']} near clusters ({dup['near_extra_rows']} extra rows, "
               f"threshold {dup['threshold']}).</p>")
    sizes = [len(g["lines"]) for g in dup["exact"]] + [len(c["lines"]) for c in dup["near"]]
    if sizes:
        size_counts = {s: sizes.count(s) for s in sorted(set(sizes))}
        out.append(bar_chart([f"size {s}" for s in size_counts], list(size_counts.values()), height=160))
    out.append(_table(["kind", "lines", "similarity"], [["exact", _lines(g["lines"]), 1.0] for g in dup["exact"]]
                      + [["near", _lines(c["lines"]), c["similarity"]] for c in dup["near"]]))
    out.append("<h2>Conflicts</h2>" + _table(["lines", "distinct answers"],
               [[_lines(c["lines"]), c["distinct_answers"]] for c in report["conflicts"]["items"]]))
    leak = report.get("leakage")
    if leak:
        out.append(f"<h2>Leakage</h2><p>{leak['exact_pairs']} exact pairs, "
                   f"{leak['ngram_pairs']} {leak['ngram']}-gram pairs "
                   f"(share &ge; {leak['min_share']}); leaked items {_e(json.dumps(leak['leaked_items']))}.</p>")
        out.append(bar_chart(list(leak["leaked_items"]), list(leak["leaked_items"].values()), height=160))
        out.append(_table(["kind", "reference", "line", "eval split", "line", "share"],
                          [[p["kind"], p["ref_split"], p["ref_line"], p["eval_split"], p["eval_line"], p["share"]]
                           for p in leak["pairs"]]))
    labels = report.get("label_balance")
    if labels:
        out.append(f"<h2>Label balance ({_e(labels['field'])})</h2>"
                   + bar_chart(list(labels["counts"]), list(labels["counts"].values()), height=180))
    out.extend(_cohort_section(report.get("cohort_balance")))
    out.append("<h2>Timings (s)</h2>" + _table(["stage", "seconds"], [[k, v] for k, v in report["timings_s"].items()]))
    out.append("</body></html>")
    return "\n".join(out)


def _cohort_section(balance: dict | None) -> list[str]:
    if not balance:
        return []
    out = [f"<h2>Class balance by cohort</h2><p>Cohorts from {_e(balance['source'])}"
           + (f"; labels from {_e(balance['label_field'])}" if balance["label_field"] else "; no label field")
           + ".</p>"]
    for group, table in balance["groups"].items():
        labels = sorted({lab for c in table["cohorts"].values() for lab in c["labels"]})
        rows = [[cohort, c["rows"], *[f"{c['labels'].get(lab, 0)} ({c['shares'].get(lab, 0):.0%})" for lab in labels]]
                for cohort, c in table["cohorts"].items()]
        out.append(f"<h3>{_e(group)}</h3>" + _table(["cohort", "rows", *labels], rows))
        if table["label_share_gap"]:
            out.append("<p>Largest gap in a label's share between cohorts: " + ", ".join(
                f"{_e(k)} {v:.0%}" for k, v in table["label_share_gap"].items()) + ".</p>")
    return out
