"""The run report: one self-contained HTML file summarising a run directory.

Every input is optional. A run that crashed half-way, or one that was never evaluated, still gets a report, and
each section says which file it lacks or could not read instead of the whole report failing: the report is most
needed exactly when something went wrong. All text taken from the run (predictions above all, which are arbitrary
model output) is HTML-escaped.
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

from tuneforge.report.charts import PALETTE, MetricBars, Series, comparison_chart, line_chart

ITEMS_EACH_WAY = 10

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#111827;background:#f9fafb;line-height:1.45}
header{background:#111827;color:#f9fafb;padding:20px 32px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;color:#d1d5db}main{max-width:1100px;margin:0 auto;padding:8px 32px 48px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:16px 20px;margin:18px 0}
h2{font-size:17px;margin:0 0 12px}h3{font-size:14px;margin:16px 0 8px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}th,td{border-bottom:1px solid #e5e7eb;padding:4px 10px;
text-align:left;vertical-align:top}th{background:#f3f4f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f3f4f6;padding:10px;border-radius:6px;overflow-x:auto;font-size:12px;white-space:pre-wrap;
word-break:break-word;margin:2px 0}.note{color:#92400e;background:#fffbeb;border:1px solid #fde68a;padding:8px 12px;
border-radius:6px}.good{color:#15803d}.bad{color:#b91c1c}.muted{color:#6b7280}code{font-size:12px}
"""


class _Missing:
    """Why an input is unavailable; rendered as a note in the section that needed it."""

    def __init__(self, message: str):
        self.message = message


def note(message: str) -> str:
    return f'<p class="note">{escape(message)}</p>'


def _read_text(path: Path) -> str | _Missing:
    if not path.is_file():
        return _Missing(f"{path.name} not found in the run directory.")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return _Missing(f"{path.name} could not be read: {exc}")


def _read_json(path: Path) -> Any | _Missing:
    text = _read_text(path)
    if isinstance(text, _Missing):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        return _Missing(f"{path.name} is not valid JSON: {exc}")


def _read_jsonl(path: Path) -> tuple[list[dict], int] | _Missing:
    """Records and the count of unreadable lines; a run killed mid-write leaves a torn last line, which is skipped."""
    text = _read_text(path)
    if isinstance(text, _Missing):
        return text
    records, bad = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    return records, bad


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return escape(str(value))
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else escape(str(value))
    if isinstance(value, (dict, list)):
        return f"<code>{escape(json.dumps(value, sort_keys=True))}</code>"
    return escape(str(value))


def table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    """A table from already-escaped cell HTML; columns in `numeric` are right-aligned."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _flatten(mapping: dict, prefix: str = "") -> dict:
    """Nested objects become dotted keys (training.steps), so a manifest reads as a table, not as inline JSON."""
    flat: dict = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _key_value_table(mapping: dict) -> str:
    return table(["field", "value"], [[escape(str(k)), fmt(v)] for k, v in _flatten(mapping).items()])


def section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{body}</section>'


# --- sections -------------------------------------------------------------------------------------------------------


def _header(run_dir: Path, manifest: Any) -> str:
    run_name = run_dir.name
    base_model = "unknown base model (no manifest.json)"
    if isinstance(manifest, dict):
        run_name = str(manifest.get("run_name") or run_name)
        model = manifest.get("base_model")
        if isinstance(model, dict):
            base_model = str(model.get("path") or model.get("source") or "unknown base model")
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"<header><h1>tuneforge run: {escape(run_name)}</h1>"
        f"<p>base model: <strong>{escape(base_model)}</strong> &middot; report generated {generated}</p></header>"
    )


def _signed(value: float) -> str:
    css = "good" if value > 0 else "bad" if value < 0 else "muted"
    return f'<span class="{css}">{value:+.4f}</span>'


def _evaluation_section(results: Any) -> str:
    if isinstance(results, _Missing):
        return section("Evaluation: base vs tuned", note(f"eval/{results.message}"), "evaluation")
    if not isinstance(results, dict):
        return section("Evaluation: base vs tuned", note("eval/results.json is not a JSON object."), "evaluation")
    metrics = list(results.get("metrics") or [])
    headline = results.get("headline_metric") or (metrics[0] if metrics else None)
    models = results.get("models") or {}
    comparison = results.get("comparison") or {}
    parts = [f'<p>{fmt(results.get("n_items", "?"))} items; headline metric: '
             f'<strong>{escape(str(headline))}</strong>.</p>']

    rows, bars = [], []
    for metric in metrics:
        base = (models.get("base") or {}).get("summary", {}).get(metric)
        tuned = (models.get("tuned") or {}).get("summary", {}).get(metric)
        paired = comparison.get(metric)
        if isinstance(paired, dict):
            level = f'{round(100 * float(paired.get("confidence", 0.95)))}%'
            interval = f'[{paired["ci_low"]:+.4f}, {paired["ci_high"]:+.4f}] ({level})'
            rows.append([escape(metric), fmt(paired["mean_a"]), fmt(paired["mean_b"]), _signed(paired["delta"]),
                         interval, f'{paired["p_value"]:.4f}', fmt(paired["n"])])
            bars.append(MetricBars(metric, paired["mean_a"], paired["mean_b"], paired["ci_low"], paired["ci_high"]))
        else:
            rows.append([escape(metric), fmt(base), fmt(tuned), "n/a", "n/a (no comparison)", "n/a", ""])
    if rows:
        parts.append(table(["metric", "base", "tuned", "delta (tuned - base)", "confidence interval", "p", "n"], rows,
                            numeric={1, 2, 3, 5, 6}))
    else:
        parts.append(note("results.json lists no metrics."))
    if bars:
        parts.append(comparison_chart(bars, title="Base vs tuned per metric"))

    model_rows = []
    for label in ("base", "tuned"):
        entry = models.get(label)
        if not isinstance(entry, dict):
            model_rows.append([label, "not evaluated", "", "", ""])
            continue
        loss = entry.get("eval_loss")
        model_rows.append([
            label,
            fmt(loss.get("loss")) if isinstance(loss, dict) else "n/a",
            fmt(loss.get("perplexity"), 2) if isinstance(loss, dict) else "n/a",
            fmt(entry.get("seconds"), 1),
            fmt(entry.get("items_per_second"), 2),
        ])
    parts.append("<h3>Models</h3>" + table(["model", "eval loss", "perplexity", "generation s", "items/s"],
                                             model_rows, numeric={1, 2, 3, 4}))
    parts.append(items_diff(results.get("items") or [], headline))
    return section("Evaluation: base vs tuned", "".join(parts), "evaluation")


def items_diff(items: list, metric: str | None) -> str:
    """The items where tuned gained most over base and where it lost most, on the headline metric."""
    scored = []
    for item in items:
        try:
            gain = float(item["tuned"]["scores"][metric]) - float(item["base"]["scores"][metric])
        except (KeyError, TypeError, ValueError):
            continue
        scored.append((gain, str(item.get("id")), item))
    if not scored:
        return "<h3>Items</h3>" + note("no per-item results with both base and tuned scores to compare.")
    improved = sorted((s for s in scored if s[0] > 0), key=lambda s: (-s[0], s[1]))[:ITEMS_EACH_WAY]
    regressed = sorted((s for s in scored if s[0] < 0), key=lambda s: (s[0], s[1]))[:ITEMS_EACH_WAY]
    out = []
    for title, chosen in (("Largest gains (tuned better)", improved), ("Largest regressions (tuned worse)", regressed)):
        out.append(f"<h3>{escape(title)} on {escape(str(metric))}</h3>")
        if not chosen:
            out.append('<p class="muted">none</p>')
            continue
        rows = []
        for gain, item_id, item in chosen:
            rows.append([
                escape(item_id),
                f"<pre>{escape(str(item.get('prompt_text') or ''))}</pre>",
                f"<pre>{escape(str(item.get('reference', '')))}</pre>",
                f"<pre>{escape(str(item['base'].get('prediction', '')))}</pre>",
                f"<pre>{escape(str(item['tuned'].get('prediction', '')))}</pre>",
                _signed(gain),
            ])
        out.append(table(["id", "prompt", "reference", "base", "tuned", "gain"], rows, numeric={5}))
    return "".join(out)


def _training_section(metrics: Any) -> str:
    title = "Training curves"
    if isinstance(metrics, _Missing):
        return section(title, note(metrics.message), "training")
    records, bad = metrics
    train = [(r["step"], r["loss"]) for r in records if _is_num(r.get("step")) and _is_num(r.get("loss"))]
    evals = [(r["step"], r["eval_loss"]) for r in records if _is_num(r.get("step")) and _is_num(r.get("eval_loss"))]
    parts = []
    if bad:
        parts.append(note(f"{bad} line(s) of metrics.jsonl could not be parsed and were skipped."))
    if not train and not evals:
        parts.append(note("metrics.jsonl holds no loss values."))
        return section(title, "".join(parts), "training")
    parts.append(line_chart(
        [Series("train loss", train, PALETTE[0]), Series("eval loss", evals, PALETTE[1], markers=True)],
        title="Loss by optimizer step", x_label="step", y_label="loss",
    ))
    summary = {"logged steps": len(train), "evaluations": len(evals)}
    if train:
        summary["first / last train loss"] = f"{train[0][1]:.4f} / {train[-1][1]:.4f}"
    if evals:
        best = min(evals, key=lambda p: p[1])
        summary["best eval loss"] = f"{best[1]:.4f} at step {best[0]}"
    speeds = [r["tokens_per_second"] for r in records if _is_num(r.get("tokens_per_second"))]
    if speeds:
        summary["mean tokens/s"] = f"{sum(speeds) / len(speeds):.1f}"
    elapsed = [r["elapsed_s"] for r in records if _is_num(r.get("elapsed_s"))]
    if elapsed:
        summary["elapsed"] = f"{max(elapsed):.1f} s"
    parts.append(_key_value_table(summary))
    return section(title, "".join(parts), "training")


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _lineage_section(manifest: Any) -> str:
    title = "Lineage"
    if isinstance(manifest, _Missing):
        return section(title, note(manifest.message), "lineage")
    if not isinstance(manifest, dict):
        return section(title, note("manifest.json is not a JSON object."), "lineage")
    nested = {"base_model", "datasets", "packages", "hardware"}
    parts = ["<h3>Run</h3>", _key_value_table({k: v for k, v in manifest.items() if k not in nested})]
    if isinstance(manifest.get("base_model"), dict):
        parts += ["<h3>Base model</h3>", _key_value_table(manifest["base_model"])]
    datasets = manifest.get("datasets")
    if isinstance(datasets, dict) and datasets:
        rows = []
        for split, info in datasets.items():
            info = info if isinstance(info, dict) else {"path": info}
            rows.append([escape(str(split)), fmt(info.get("path")), f"<code>{fmt(info.get('sha256'))}</code>",
                         fmt(info.get("rows"))])
        parts += ["<h3>Datasets</h3>", table(["split", "path", "sha256", "rows"], rows, numeric={3})]
    for key, heading in (("hardware", "Hardware"), ("packages", "Packages")):
        if isinstance(manifest.get(key), dict) and manifest[key]:
            parts += [f"<h3>{heading}</h3>", _key_value_table(dict(sorted(manifest[key].items())) if key == "packages"
                                                             else manifest[key])]
    return section(title, "".join(parts), "lineage")


def _config_section(config: Any) -> str:
    if isinstance(config, _Missing):
        return section("Resolved config", note(config.message), "config")
    return section("Resolved config", f"<pre>{escape(config)}</pre>", "config")


def render_report(run_dir: Path) -> str:
    """The report's HTML for `run_dir` (see `write_report`)."""
    run_dir = Path(run_dir)
    manifest = _read_json(run_dir / "manifest.json")
    body = "".join([
        _evaluation_section(_read_json(run_dir / "eval" / "results.json")),
        _training_section(_read_jsonl(run_dir / "metrics.jsonl")),
        _lineage_section(manifest),
        _config_section(_read_text(run_dir / "config.yaml")),
    ])
    title = manifest.get("run_name") if isinstance(manifest, dict) and manifest.get("run_name") else run_dir.name
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>tuneforge report: {escape(str(title))}</title><style>{CSS}</style></head>"
        f"<body>{_header(run_dir, manifest)}<main>{body}</main></body></html>\n"
    )


def write_report(run_dir: Path) -> Path:
    """Write `run_dir/report.html` from whatever inputs the run directory holds and return its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    from tuneforge.runs.rundir import write_text_atomic

    path = run_dir / "report.html"
    # Write then rename, so a viewer never opens a half-written report.
    write_text_atomic(path, render_report(run_dir))
    return path
