"""`tuneforge gate`: check an evaluation's results against release gates; the exit status is the verdict.

Exit status: 0 all gates pass, 1 at least one gate fails, 2 the gate file or the results file is unusable.
Register on the main app with ``main_app.command("gate")(gate)``; ``app`` runs it standalone.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from tuneforge.console import make_console
from tuneforge.errors import TuneforgeError
from tuneforge.eval.gates import ResultsError, evaluate_gates, known_metric_names, load_gate_file

app = typer.Typer(
    help="Check eval results against release gates (exit 0 pass, 1 a gate failed, 2 bad gate/results file).",
    add_completion=False,
    no_args_is_help=True,
)


def _load_results(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ResultsError(f"cannot read results file {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: expected a JSON object with 'models'")
    return data


@app.command()
def gate(
    results: Path = typer.Argument(..., help="eval/results.json written by `tuneforge eval` (per-model summary, slices, comparison)."),
    gates: Path = typer.Option(..., "--gates", "-g", help="YAML gate file: 'gates:' list of 'METRIC \\[delta_vs_base] OP NUMBER \\[on SLICE]'."),
    model: Optional[str] = typer.Option(None, "--model", help="Model to gate (default: 'tuned', else the only model)."),
    base: Optional[str] = typer.Option(None, "--base", help="Model delta_vs_base compares against (default: 'base')."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the outcomes as JSON to this path (for CI)."),
) -> None:
    """Evaluate every gate; bounded metrics are fractions and thresholds above 1 are percentage points."""
    console = make_console(stderr=False)
    try:
        data = _load_results(results)
        # Names are checked against tuneforge's metrics plus the results, so a typo is an error (exit 2) while
        # a known metric the run did not produce is a failed gate (exit 1).
        parsed = load_gate_file(gates, known_metrics=known_metric_names(data))
        outcomes = evaluate_gates(data, parsed, model=model, base=base)
    except TuneforgeError as exc:
        console.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        if exc.hint:
            console.print(f"  hint: {exc.hint}", highlight=False)
        raise typer.Exit(exc.exit_code)

    table = Table(title=f"Release gates: {results}", show_lines=False)
    table.add_column("line", justify="right")
    table.add_column("gate")
    table.add_column("actual", justify="right")
    table.add_column("result")
    for o in outcomes:
        lineno, _, text = o.line.partition(": ") if o.gate and o.gate.lineno else ("", "", o.line)
        actual = "—" if o.actual is None else f"{o.actual:+.4f}" if o.gate and o.gate.delta_vs_base else f"{o.actual:.4f}"
        verdict = "[green]PASS[/]" if o.passed else "[red]FAIL[/]"
        table.add_row(lineno, text, actual, f"{verdict} {o.reason.split(': ', 1)[-1]}")
    console.print(table)
    failed = sum(not o.passed for o in outcomes)
    if json_out is not None:
        payload = [{"line": o.line, "passed": o.passed, "actual": o.actual, "reason": o.reason,
                    "gate": asdict(o.gate) if o.gate else None} for o in outcomes]
        json_out.write_text(json.dumps({"passed": failed == 0, "outcomes": payload}, indent=2), encoding="utf-8")
    if failed:
        console.print(f"[bold red]{failed} of {len(outcomes)} gate(s) failed[/]")
        raise typer.Exit(1)
    console.print(f"[bold green]all {len(outcomes)} gate(s) passed[/]")
