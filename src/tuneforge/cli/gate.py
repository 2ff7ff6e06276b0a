"""`tuneforge gate`: check an evaluation's results against release gates; the exit status is the verdict.

Exit status: 0 all gates pass, 1 at least one gate fails, 2 the gate file or the results file is unusable.
Register on the main app with ``main_app.command("gate")(gate)``; ``app`` runs it standalone.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from tuneforge.atomic import write_json_atomic
from tuneforge.console import make_console
from tuneforge.errors import TuneforgeError
from tuneforge.eval.gates import (
    evaluate_gates,
    known_metric_names,
    load_gate_file,
)
from tuneforge.eval.pipeline import read_results

app = typer.Typer(
    help="Check eval results against release gates (exit 0 pass, 1 a gate failed, 2 bad gate/results file).",
    add_completion=False,
    no_args_is_help=True,
)


def _refresh_report(results: Path, verdicts: Path, console) -> None:
    """Re-render the report beside the results so it shows the verdicts just written (a run's eval/results.json:
    the run report; an eval's results.json: its report.html, when it has one)."""
    run_dir = results.resolve().parent.parent
    if verdicts.resolve() != (results.resolve().parent / "gates.json"):
        return
    if results.resolve().parent.name == "eval" and (run_dir / "manifest.json").is_file():
        from tuneforge.report.html import write_report

        console.print(f"report:  {write_report(run_dir)}")
    elif (results.parent / "report.html").is_file():
        from tuneforge.report.eval_report import write_eval_report

        console.print(f"report:  {write_eval_report(read_results(results), results.parent / 'report.html')}")


@app.command()
def gate(
    results: Path = typer.Argument(..., help="results.json of a training run (RUN/eval/) or of `tuneforge eval` "
                                             "(per-model summary, slices, comparison)."),
    gates: Path = typer.Option(..., "--gates", "-g", help="YAML gate file: 'gates:' list of 'METRIC "
                               "\\[delta_vs_base \\[ci_low|ci_high]] OP NUMBER \\[on SLICE]'."),
    model: Optional[str] = typer.Option(None, "--model", help="Model to gate (default: 'tuned', else the only model)."),
    base: Optional[str] = typer.Option(None, "--base", help="Model delta_vs_base compares against (default: 'base')."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Where to write the verdicts as JSON (default: "
                                            "gates.json beside RESULTS, which the run and eval reports show)."),
) -> None:
    """Evaluate every gate; bounded metrics are fractions and thresholds above 1 are percentage points."""
    console = make_console(stderr=False)
    try:
        data = read_results(results)
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
        signed = o.gate is not None and o.gate.delta_vs_base
        actual = "—" if o.actual is None else f"{o.actual:+.4f}" if signed else f"{o.actual:.4f}"
        verdict = "[green]PASS[/]" if o.passed else "[red]FAIL[/]"
        # Reasons quote user text and metric hints with [brackets]; rich would read those as markup and drop them.
        table.add_row(escape(lineno), escape(text), actual, f"{verdict} {escape(o.reason.split(': ', 1)[-1])}")
    console.print(table)
    failed = sum(not o.passed for o in outcomes)
    payload = [{"line": o.line, "passed": o.passed, "actual": o.actual, "reason": o.reason,
                "gate": asdict(o.gate) if o.gate else None} for o in outcomes]
    verdicts = json_out or results.with_name("gates.json")
    write_json_atomic(verdicts, {"passed": failed == 0, "gate_file": str(gates), "outcomes": payload})
    _refresh_report(results, verdicts, console)
    if failed:
        console.print(f"[bold red]{failed} of {len(outcomes)} gate(s) failed[/]")
        raise typer.Exit(1)
    console.print(f"[bold green]all {len(outcomes)} gate(s) passed[/]")
