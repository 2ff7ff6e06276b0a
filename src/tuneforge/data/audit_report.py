"""audit.json -> a self-contained audit.html: inline SVG charts, no scripts, no external assets.

Every string that came from the data (lines of text, masked PII, file names) goes through html.escape:
the report is opened in a browser, and training data is exactly where hostile markup turns up.
"""
from __future__ import annotations

import html
import json
from typing import Any

_BAR = "#4a7fb5"
_MARK = ("#c0392b", "#8e44ad")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def bar_chart(labels: list[str], values: list[float], *, width: int = 640, height: int = 220,
              markers: list[tuple[float, str]] | None = None, x_max: float | None = None) -> str:
    """Vertical bars; `markers` are (x value, label) vertical lines on a numeric x axis from 0 to x_max."""
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
    if x_max:
        for k, (x_value, label) in enumerate(markers or []):
            x = pad + (width - 2 * pad) * min(x_value / x_max, 1.0)
            color = _MARK[k % 2]
            parts.append(f'<line x1="{x:.1f}" y1="10" x2="{x:.1f}" y2="{10 + plot_h}" stroke="{color}" stroke-width="2" '
                         f'stroke-dasharray="4 2"/><text x="{x + 3:.1f}" y="{22 + 14 * k}" font-size="11" '
                         f'fill="{color}">{_e(label)}</text>')
        parts.append(f'<text x="{pad}" y="{height - 20}" font-size="11">0</text>'
                     f'<text x="{width - pad - 40}" y="{height - 20}" font-size="11">{_e(int(x_max))}</text>')
    else:
        for k, label in enumerate(labels):
            x = pad + k * bar_w + bar_w / 2
            parts.append(f'<text x="{x:.1f}" y="{height - 22}" font-size="11" text-anchor="middle">{_e(label)}</text>')
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
               [[k, v["path"], v["format"], v["file_type"], v["rows"], v["sha256"][:16]] for k, v in report["sources"].items()]))
    tokens = report.get("tokens")
    if tokens:
        hist = tokens["histogram"]
        edges, counts = hist["edges"], hist["counts"]
        labels = [f"{edges[k]:.0f}-{edges[k + 1]:.0f} tokens" for k in range(len(counts))]
        markers = [(tokens["max_length"], f"max length {tokens['max_length']}")]
        if tokens.get("context_window"):
            markers.append((tokens["context_window"], f"context window {tokens['context_window']}"))
        x_max = max([edges[-1] if edges else 0] + [m[0] for m in markers])
        out.append(f"<h2>Token lengths ({_e(report.get('model'))})</h2>")
        out.append(bar_chart(labels, counts, markers=markers, x_max=x_max))
        out.append(_table(["field", "P50", "P95", "P99", "max"],
                          [[k, v.get("p50"), v.get("p95"), v.get("p99"), v.get("max")] for k, v in tokens["fields"].items()]))
        out.append(f"<p>{tokens['over_max_length']} rows exceed max length {tokens['max_length']}; truncation loses "
                   f"{tokens['trained_tokens_lost_to_truncation']} trained tokens ({tokens['lost_trained_share']:.2%} of "
                   f"{tokens['trained_tokens']}). Trained-token ratio {tokens['trained_token_ratio']:.2%}.</p>")
    pii = report["pii"]
    out.append("<h2>Personal data</h2>" + bar_chart(list(pii["counts"]), list(pii["counts"].values())))
    out.append(_table(["type", "line", "masked example"],
                      [[t, ex["line"], ex["masked"]] for t, exs in pii["examples"].items() for ex in exs]))
    dup = report["duplicates"]
    out.append(f"<h2>Duplicates</h2><p>{dup['exact_groups']} exact groups ({dup['exact_extra_rows']} extra rows), "
               f"{dup['near_clusters']} near clusters ({dup['near_extra_rows']} extra rows, threshold {dup['threshold']}).</p>")
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
        out.append(f"<h2>Leakage</h2><p>{leak['exact_pairs']} exact pairs, {leak['ngram_pairs']} {leak['ngram']}-gram pairs "
                   f"(share &ge; {leak['min_share']}); leaked items {_e(json.dumps(leak['leaked_items']))}.</p>")
        out.append(bar_chart(list(leak["leaked_items"]), list(leak["leaked_items"].values()), height=160))
        out.append(_table(["kind", "reference", "line", "eval split", "line", "share"],
                          [[p["kind"], p["ref_split"], p["ref_line"], p["eval_split"], p["eval_line"], p["share"]]
                           for p in leak["pairs"]]))
    labels = report.get("label_balance")
    if labels:
        out.append(f"<h2>Label balance ({_e(labels['field'])})</h2>"
                   + bar_chart(list(labels["counts"]), list(labels["counts"].values()), height=180))
    out.append("<h2>Timings (s)</h2>" + _table(["stage", "seconds"], [[k, v] for k, v in report["timings_s"].items()]))
    out.append("</body></html>")
    return "\n".join(out)
