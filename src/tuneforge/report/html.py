"""The run report: one self-contained HTML file summarising a run directory.

Every input is optional. A run that crashed half-way, or one that was never evaluated, still gets a report, and
each section says which file it lacks or could not read instead of the whole report failing: the report is most
needed exactly when something went wrong. All text taken from the run (predictions above all, which are arbitrary
model output) is HTML-escaped.
"""
from __future__ import annotations

import json
import math
import re
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

    model_rows, splits = [], {}
    for label in ("base", "tuned"):
        entry = models.get(label)
        if not isinstance(entry, dict):
            model_rows.append([label, "not evaluated", "", "", "", "", ""])
            continue
        validation, answers = entry.get("validation_loss"), entry.get("eval_loss")
        splits.update({"validation": (validation or {}).get("split"), "answers": (answers or {}).get("split")}
                      if isinstance(validation, dict) or isinstance(answers, dict) else {})
        model_rows.append([
            label,
            fmt(validation.get("loss")) if isinstance(validation, dict) else "n/a",
            fmt(validation.get("perplexity"), 2) if isinstance(validation, dict) else "n/a",
            fmt(answers.get("loss")) if isinstance(answers, dict) else "n/a",
            fmt(answers.get("perplexity"), 2) if isinstance(answers, dict) else "n/a",
            fmt(entry.get("task_seconds", entry.get("seconds")), 1),
            fmt(entry.get("items_per_second"), 2),
        ])
    # Two losses, on two different sets: the validation split's trained tokens (training's eval loss) and the
    # reference answers of the evaluated test items (the `eval_loss`/`perplexity` metrics).
    validation_on = splits.get("validation") or "validation"
    answers_on = splits.get("answers") or "evaluated items"
    parts.append("<h3>Models</h3>" + table(
        ["model", f"eval loss on the {validation_on} split (trained tokens)", "its perplexity",
         f"eval loss on the {answers_on} (reference answers)", "its perplexity", "generation s", "items/s"],
        model_rows, numeric={1, 2, 3, 4, 5, 6}))
    parts.append('<p class="muted">Two different losses: the first is training\'s eval loss on the held-out '
                 'validation split; the second is the teacher-forced loss of the test items\' reference answers '
                 '(the eval_loss metric).</p>')
    for label in ("base", "tuned"):
        entry = models.get(label)
        if isinstance(entry, dict) and isinstance(entry.get("label_report"), dict):
            parts.append(label_report_html(label, entry["label_report"]))
    parts.append(items_diff(_task_rows(results.get("items") or []), headline))
    parts.append(failures_html(results.get("items") or [], headline, metrics))
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
                f"<pre>{escape(readable_prompt(item.get('prompt_text')))}</pre>",
                f"<pre>{escape(str(item.get('reference', '')))}</pre>",
                f"<pre>{escape(str(item['base'].get('prediction', '')))}</pre>",
                f"<pre>{escape(str(item['tuned'].get('prediction', '')))}</pre>",
                _signed(gain),
            ])
        out.append(table(["id", "prompt", "reference", "base", "tuned", "gain"], rows, numeric={5}))
    return "".join(out)


def label_report_html(name: str, report: dict) -> str:
    """A model's label-task block: collapse warning, confusion matrix, predicted vs reference distribution,
    calibration and selective prediction (accuracy vs coverage)."""
    parts = []
    from tuneforge.eval.labels import collapse_warning

    warning = collapse_warning(name, report)
    if warning:
        parts.append(f'<p class="note bad"><strong>warning:</strong> {escape(warning)}</p>')
    labels = report["confusion"]["labels"]
    rows = [[escape(str(labels[i]))] + [str(v) for v in row] for i, row in enumerate(report["confusion"]["matrix"])]
    parts.append(f"<h3>{escape(name)}: confusion matrix (rows: reference, columns: predicted)</h3>")
    parts.append(table(["reference \\ predicted", *map(str, labels)], rows, numeric=set(range(1, len(labels) + 1))))
    distribution = report.get("distribution")
    if distribution:
        total = max(sum(distribution["reference"].values()), 1)
        shown = list(dict.fromkeys([*distribution["reference"], *distribution["predicted"]]))
        parts.append(f"<h3>{escape(name)}: predicted vs reference labels</h3>" + table(
            ["label", "reference", "predicted"],
            [[escape(str(label))] + [f"{d.get(label, 0)} ({d.get(label, 0) / total:.0%})"
                                     for d in (distribution["reference"], distribution["predicted"])]
             for label in shown], numeric={1, 2}))
    if report.get("calibration"):
        parts.append(report["calibration"]["svg"])  # built by label_metrics from numbers only
    else:
        parts.append(note(report.get("calibration_note", "no calibration data")))
    selective = report.get("selective")
    if selective:
        parts.append(f"<h3>{escape(name)}: selective prediction (abstain below a confidence threshold)</h3>")
        parts.append(f"<p>area under the accuracy-coverage curve: <strong>{selective['auc']:.4f}</strong></p>")
        parts.append(table(["confidence &ge; threshold", "coverage", "accuracy", "answered"],
                           [[fmt(r["threshold"], 2), fmt(r["coverage"]), fmt(r["accuracy"]), fmt(r["answered"])]
                            for r in selective["thresholds"]], numeric={0, 1, 2, 3}))
        parts.append(line_chart([Series("accuracy", [tuple(p) for p in selective["curve"]], PALETTE[0])],
                                title=f"{name}: accuracy vs coverage (most confident first)", x_label="coverage",
                                y_label="accuracy"))
    return "".join(parts)


_ROLE_START = re.compile(r"<\|im_start\|>\s*(\w+)\s*\n?")
_MARKUP = re.compile(r"<\|[^|<>\n]{1,40}\|>|</?s>|\[/?INST\]")


def readable_prompt(text: Any) -> str:
    """A prompt as a person reads it. Items carry `role: content` lines; results written before that (or data whose
    prompts were pre-rendered) hold chat-template markup, shown here as `role:` lines without the special tokens."""
    text = _ROLE_START.sub(lambda m: f"{m.group(1)}: ", str(text or ""))
    return _MARKUP.sub("", text).strip()


def _task_rows(items: list) -> list[dict]:
    return [i for i in items if isinstance(i, dict) and not str(i.get("id")).startswith(("probe:", "general:"))]


def failures_html(items: list, metric: str | None, metrics: list[str], model: str = "tuned") -> str:
    """Every task item where `model` scores below 1.0 on the headline metric, and for JSON-object answers which
    fields were wrong, missing or extra (counted over items, by the json_fields metric's own comparison)."""
    from tuneforge.eval.metrics import json_field_diff

    failed = []
    for item in _task_rows(items):
        try:
            score = float(item[model]["scores"][metric])
        except (KeyError, TypeError, ValueError):
            continue
        if score < 1.0:
            failed.append((score, str(item.get("id")), item))
    title = f"<h3>Failures: {escape(model)} below 1.0 on {escape(str(metric))} ({len(failed)} items)</h3>"
    if not failed:
        return title + '<p class="muted">none</p>'
    json_task = "json_fields" in metrics
    fields: dict[str, dict[str, int]] = {}
    rows = []
    for score, item_id, item in sorted(failed, key=lambda f: (f[0], f[1])):
        prediction = str(item[model].get("prediction", ""))
        row = [escape(item_id), f"<pre>{escape(readable_prompt(item.get('prompt_text')))}</pre>",
               f"<pre>{escape(str(item.get('reference', '')))}</pre>", f"<pre>{escape(prediction)}</pre>",
               fmt(score)]
        if json_task:
            try:
                diff = json_field_diff(prediction, str(item.get("reference", "")))
            except ValueError:
                diff = None
            if diff is None:
                row.append("not one JSON object")
            else:
                for kind in ("wrong", "missing", "extra"):
                    for key in diff[kind]:
                        fields.setdefault(key, {"wrong": 0, "missing": 0, "extra": 0})[kind] += 1
                row.append(escape("; ".join(f"{kind}: {', '.join(diff[kind])}" for kind in ("wrong", "missing", "extra")
                                            if diff[kind]) or "-"))
        rows.append(row)
    out = [title]
    if json_task:
        unparsed = sum(1 for r in rows if r[-1] == "not one JSON object")
        out.append("<h3>Field errors over the failed items</h3>")
        out.append(table(["field", "wrong", "missing", "extra"],
                         [[escape(k), str(v["wrong"]), str(v["missing"]), str(v["extra"])]
                          for k, v in sorted(fields.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))],
                         numeric={1, 2, 3}) if fields else '<p class="muted">no field-level errors</p>')
        if unparsed:
            out.append(f"<p>{unparsed} failed item(s) are not one JSON object (no fields to compare).</p>")
    out.append(table(["id", "prompt", "reference", model, metric or "score"] + (["fields"] if json_task else []),
                     rows, numeric={4}))
    return "".join(out)


def gates_html(path: Path) -> str:
    """Gate verdicts `tuneforge gate` wrote beside the results; '' when there is no such file."""
    if not path.is_file():
        return ""
    written = _read_json(path)
    verdicts = written.get("outcomes") if isinstance(written, dict) else None
    if not isinstance(verdicts, list):
        return section("Release gates", note(f"{path.name} could not be read as gate verdicts "
                                             "({\"passed\", \"outcomes\": [...]}, as `tuneforge gate` writes)."),
                       "gates")
    rows = [[escape(str(v.get("line", ""))), fmt(v.get("actual")),
             '<span class="good">PASS</span>' if v.get("passed") else '<span class="bad">FAIL</span>',
             escape(str(v.get("reason", "")))] for v in verdicts if isinstance(v, dict)]
    passed = sum(1 for v in verdicts if isinstance(v, dict) and v.get("passed"))
    head = f"<p>{passed} of {len(rows)} gates pass (from <code>{escape(path.name)}</code>).</p>"
    return section("Release gates", head + table(["gate", "actual", "verdict", "reason"], rows, numeric={1}),
                   "gates")


def checks_html(results: dict) -> str:
    """Safety probes and the general set (forgetting), per model, when the evaluation ran them."""
    models = results.get("models") or {}
    rows = []
    for name in ("base", "tuned"):
        slices = (models.get(name) or {}).get("slices") or {}
        for key in sorted(k for k in slices if k in ("general", "safety") or k.startswith("safety.")):
            values = slices[key] if isinstance(slices[key], dict) else {}
            rows.append([escape(name), escape(key), ", ".join(f"{escape(str(k))} {fmt(v)}" for k, v in values.items())])
    if not rows:
        return ""
    comparison = results.get("comparison") or {}
    from tuneforge.eval import registry

    shown = [m for m in registry.group("general") + registry.group("probes") if m in comparison]
    body = table(["model", "check", "values"], rows)
    if shown:
        body += table(["metric", "base", "tuned", "delta"],
                      [[escape(m), fmt(comparison[m]["mean_a"]), fmt(comparison[m]["mean_b"]),
                        _signed(comparison[m]["delta"])] for m in shown], numeric={1, 2, 3})
    return section("Safety and forgetting checks", body, "checks")


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
        [Series("train loss", train, PALETTE[0]),
         Series("eval loss (validation split)", evals, PALETTE[1], markers=True)],
        title="Loss by optimizer step", x_label="step", y_label="loss",
    ))
    summary = {"logged steps": len(train), "evaluations": len(evals)}
    if train:
        summary["first / last train loss"] = f"{train[0][1]:.4f} / {train[-1][1]:.4f}"
    if evals:
        best = min(evals, key=lambda p: p[1])
        summary["best eval loss (validation split)"] = f"{best[1]:.4f} at step {best[0]}"
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
    results = _read_json(run_dir / "eval" / "results.json")
    body = "".join([
        gates_html(run_dir / "eval" / "gates.json"),
        _evaluation_section(results),
        checks_html(results) if isinstance(results, dict) else "",
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
    from tuneforge.atomic import write_text_atomic

    path = run_dir / "report.html"
    # Write then rename, so a viewer never opens a half-written report.
    write_text_atomic(path, render_report(run_dir))
    return path
