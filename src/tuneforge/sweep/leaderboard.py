"""A sweep's outputs: the leaderboard (terminal table, leaderboard.json, leaderboard.html with metric-vs-parameter
charts) and best.yaml, the best trial's resolved config, ready for `tuneforge train`."""
from __future__ import annotations

import math
from html import escape
from pathlib import Path

from rich.table import Table

from tuneforge.atomic import write_json_atomic, write_text_atomic
from tuneforge.report.charts import _FONT, PALETTE, _Frame, _svg, nice_ticks
from tuneforge.runs.rundir import now_iso


def leaderboard_rows(study, runs_dir: Path, direction: str) -> list[dict]:
    """Every trial, best first: finished ones by value, then pruned, failed, running and waiting ones."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({
            "trial": t.number, "state": t.state.name.lower(),
            # A pruned trial's value is Optuna's last intermediate value (our signed loss), not the metric.
            "value": t.value if t.state.name == "COMPLETE" else None, "params": dict(t.params),
            "validation_loss": t.user_attrs.get("validation_loss", t.user_attrs.get("last_eval_loss")),
            "pruned_at_step": max(t.intermediate_values) if t.state.name == "PRUNED" and t.intermediate_values
            else None,
            "seconds": t.user_attrs.get("seconds"), "error": t.user_attrs.get("error"),
            "run": str(runs_dir / t.user_attrs["run"]) if t.user_attrs.get("run") else None,
        })
    order = {"complete": 0, "pruned": 1, "fail": 2, "running": 3, "waiting": 4}
    sign = -1 if direction == "maximize" else 1
    return sorted(rows, key=lambda r: (order.get(r["state"], 5),
                                       sign * r["value"] if r["value"] is not None else 0.0, r["trial"]))


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_table(rows: list[dict], param_names: list[str], metric: str) -> Table:
    table = Table(title=f"sweep leaderboard ({metric})")
    for column in ["#", "trial", "state", metric, "val loss", *param_names, "s"]:
        table.add_column(column, justify="right" if column not in ("state",) else "left")
    for rank, row in enumerate(rows, 1):
        style = "bold green" if rank == 1 and row["state"] == "complete" else None
        state = row["state"] + (f" @{row['pruned_at_step']}" if row["pruned_at_step"] is not None else "")
        table.add_row(str(rank), str(row["trial"]), state, _fmt(row["value"]), _fmt(row["validation_loss"]),
                      *(_fmt(row["params"].get(p)) for p in param_names), _fmt(row["seconds"]), style=style)
    return table


def scatter_chart(points: list[tuple[object, float]], *, title: str, x_label: str, y_label: str,
                  log_x: bool = False, width: int = 420, height: int = 260) -> str:
    """Metric (y) against one parameter (x): numbers on a numeric (or log10) axis, other values as categories."""
    points = [(x, y) for x, y in points if y is not None and math.isfinite(y)]
    if not points:
        return _svg(width, 80, title, [f'<text x="{width / 2:.0f}" y="50" text-anchor="middle" {_FONT}>no data</text>'])
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x, _ in points)
    categories: list = []
    if numeric:
        xs = [math.log10(x) if log_x and x > 0 else float(x) for x, _ in points]
    else:
        categories = sorted({str(x) for x, _ in points})
        xs = [float(categories.index(str(x))) for x, _ in points]
    ys = [y for _, y in points]
    x_ticks = nice_ticks(min(xs), max(xs), 5) if numeric else [-0.5, len(categories) - 0.5]
    frame = _Frame(width, height, x_ticks, nice_ticks(min(ys), max(ys), 4), margin=(36, 16, 36, 56))
    body = frame.axes(x_labels=numeric)
    for k, name in enumerate(categories):
        body.append(f'<text x="{frame.px(k):.1f}" y="{height - frame.bottom + 16}" text-anchor="middle" {_FONT}>'
                    f"{escape(name)}</text>")
    for (raw, y), x in zip(points, xs):
        body.append(f'<circle cx="{frame.px(x):.1f}" cy="{frame.py(y):.1f}" r="4" fill="{PALETTE[0]}" '
                    f'fill-opacity="0.8"><title>{escape(str(raw))}: {y:.4f}</title></circle>')
    body.append(f'<text x="{(frame.left + width - frame.right) / 2:.0f}" y="{height - 4}" text-anchor="middle" '
                f'{_FONT}>{escape(("log10 " if log_x and numeric else "") + x_label)}</text>'
                f'<text transform="translate(14 {(frame.top + height - frame.bottom) / 2:.0f}) rotate(-90)" '
                f'text-anchor="middle" {_FONT}>{escape(y_label)}</text>')
    return _svg(width, height, title, body)


def render_html(summary: dict, specs) -> str:
    metric, rows = summary["metric"], summary["trials"]
    names = [s.name for s in specs]
    complete = [r for r in rows if r["state"] == "complete"]
    charts = "".join(
        scatter_chart([(r["params"].get(s.name), r["value"]) for r in complete], title=f"{metric} vs {s.name}",
                      x_label=s.name, y_label=metric, log_x=s.kind == "log")
        for s in specs)
    head = "".join(f"<th>{escape(c)}</th>" for c in ["#", "trial", "state", metric, "val loss", *names, "s", "run"])
    body = []
    for rank, r in enumerate(rows, 1):
        cells = [rank, r["trial"], r["state"] + (f" @{r['pruned_at_step']}" if r["pruned_at_step"] is not None
                                                  else ""), _fmt(r["value"]), _fmt(r["validation_loss"]),
                 *(_fmt(r["params"].get(n)) for n in names), _fmt(r["seconds"]), r["run"] or "-"]
        title = f' title="{escape(r["error"])}"' if r["error"] else ""
        body.append(f"<tr{title}>" + "".join(f"<td>{escape(str(c))}</td>" for c in cells) + "</tr>")
    best = summary.get("best")
    best_line = "<p>No trial finished.</p>"
    if best:
        best_line = (f"<p>Best: trial {best['trial']}, {escape(metric)} = {best['value']:.4f} "
                     f"({escape(', '.join(f'{k}={v}' for k, v in best['params'].items()))}); "
                     f"config <code>{escape(summary['best_config'] or '')}</code></p>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>sweep " + escape(summary["study"]) + "</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em;color:#111827}table{border-collapse:collapse}"
        "td,th{border:1px solid #e5e7eb;padding:4px 8px;text-align:right}th{background:#f3f4f6}"
        ".charts{display:flex;flex-wrap:wrap;gap:12px}</style></head><body>"
        f"<h1>Sweep {escape(summary['study'])}</h1>"
        f"<p>{escape(summary['direction'])} <b>{escape(metric)}</b> over {len(rows)} trials "
        f"({summary['counts'].get('complete', 0)} complete, {summary['counts'].get('pruned', 0)} pruned, "
        f"{summary['counts'].get('fail', 0)} failed); config {escape(summary['config'])}; "
        f"storage <code>{escape(summary['storage'])}</code>"
        + ("; stopped by the time budget" if summary["stopped_by_budget"] else "") + "</p>"
        + best_line + f"<div class='charts'>{charts}</div>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></body></html>"
    )


def best_config_yaml(settings, best_params: dict, study_name: str) -> str:
    """The config `tuneforge train` should run next: the sweep's fixed overrides plus the best trial's values."""
    from tuneforge.config.loader import dump_config, load_config
    from tuneforge.sweep.space import override

    overrides = [*settings.overrides, *(override(k, v) for k, v in best_params.items()),
                 f"output.name={study_name}-best"]
    cfg = load_config(settings.config, overrides)
    header = (f"# best config of sweep {study_name!r} (from {settings.config}): "
              + ", ".join(f"{k}={v}" for k, v in best_params.items()) + "\n# tuneforge train THIS_FILE\n")
    return header + dump_config(cfg)


def write_outputs(study, settings, *, out: Path, runs_dir: Path, direction: str, storage: str,
                  stopped_by_budget: bool, console) -> dict:
    rows = leaderboard_rows(study, runs_dir, direction)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    best = rows[0] if rows and rows[0]["state"] == "complete" else None
    best_path = None
    if best:
        best_path = out / "best.yaml"
        write_text_atomic(best_path, best_config_yaml(settings, best["params"], study.study_name))
    summary = {
        "study": study.study_name, "config": str(settings.config), "storage": storage, "metric": settings.metric,
        "direction": direction, "params": [s.text for s in settings.params], "updated_at": now_iso(),
        "stopped_by_budget": stopped_by_budget, "counts": counts, "best": best,
        "best_config": str(best_path) if best_path else None, "trials": rows,
    }
    write_json_atomic(out / "leaderboard.json", summary)
    write_text_atomic(out / "leaderboard.html", render_html(summary, settings.params))
    if best:
        console.print(f"[bold]best[/] trial {best['trial']}: {settings.metric} = {best['value']:.4f}; "
                      f"config {best_path} (tuneforge train {best_path})")
    console.print(f"[bold]leaderboard[/] {out / 'leaderboard.html'}")
    return summary
