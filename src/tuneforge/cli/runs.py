"""`tuneforge runs ls` and `tuneforge runs show NAME`: read run directories and their lineage."""
from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from tuneforge.console import make_console

app = typer.Typer(help="List and inspect run directories (config, lineage, metrics, results).", no_args_is_help=True)

RunsRoot = typer.Option(Path("runs"), "--runs-dir", help="Parent directory of run directories.")


def _headline(results: dict) -> str:
    comparison = results.get("comparison") or {}
    metric = results.get("headline_metric")
    if metric and metric in comparison:
        row = comparison[metric]
        return (f"{metric} {row['mean_a']:.3f} -> {row['mean_b']:.3f} "
                f"({row['delta']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}])")
    return "-"


@app.command("ls")
def list_runs_cmd(runs_dir: Path = RunsRoot) -> None:
    """One line per run: status, base model, method, steps and the headline base -> tuned result."""
    from tuneforge.runs.rundir import list_runs

    rows = list_runs(runs_dir)
    if not rows:
        make_console().print(f"no runs under {runs_dir}")
        return
    table = Table(title=f"runs in {runs_dir}")
    for column in ("name", "status", "base model", "method", "steps", "started", "headline (base -> tuned, 95% CI)"):
        table.add_column(column, overflow="fold")
    for row in rows:
        manifest = row["manifest"]
        table.add_row(
            row["name"],
            row["status"],  # a run whose process is gone reads `interrupted`, not its manifest's `running`
            (manifest.get("base_model") or {}).get("source", "?"),
            (manifest.get("method") or {}).get("name", "?"),
            str((manifest.get("training") or {}).get("steps", "-")),
            manifest.get("started_at", "?"),
            _headline(row["results"]),
        )
    make_console(stderr=False).print(table)


@app.command("show")
def show(
    name: str = typer.Argument(..., help="Run name (under --runs-dir) or path to a run directory."),
    runs_dir: Path = RunsRoot,
    as_json: bool = typer.Option(False, "--json", help="Print the manifest and results as JSON."),
) -> None:
    """A run's lineage (data hashes, base model, versions), training summary, exports and results."""
    from rich.markup import escape

    from tuneforge.runs.rundir import effective_status, open_run

    run = open_run(name, runs_dir)
    manifest = run.read_manifest()
    status, reason = effective_status(run, manifest)
    results_path = run.eval_dir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    if as_json:
        typer.echo(json.dumps({"status": status, "status_reason": reason, "manifest": manifest, "results": results},
                              indent=2, default=str))
        return
    console = make_console(stderr=False)
    console.print(f"[bold]{escape(run.name)}[/] ({status}) at {escape(str(run.path))}")
    if reason:
        console.print(f"status: the manifest says running, but {reason}", markup=False)
    if status == "interrupted":
        # The run's own resolved config carries every override it was started with, so the resume check passes.
        console.print(f"resume: tuneforge train {run.config} output.name={run.name} --resume", markup=False)
    elif status == "failed" and manifest.get("error"):
        console.print(f"error: {manifest['error']}", markup=False)
    base = manifest.get("base_model") or {}
    # markup=False: paths and names are the user's and may hold [brackets] that rich would take for styles.
    console.print(f"base model: {base.get('source')} ({base.get('kind')}), weights sha256 {base.get('weights_sha256')}",
                  markup=False)
    for split, info in (manifest.get("datasets") or {}).items():
        console.print(f"data {split}: {info['path']} ({info['rows']} rows, sha256 {info['sha256'][:16]}...)",
                      markup=False)
    training = manifest.get("training") or {}
    if training:
        parts = [f"training: {training.get('steps')} steps"]
        if training.get("train_loss") is not None:
            parts.append(f"train loss {training['train_loss']:.4f} mean"
                         + (f", {training['final_train_loss']:.4f} last" if training.get("final_train_loss") is not None
                            else ""))
        if training.get("padding_share") is not None:
            parts.append(f"padding {training['padding_share']:.1%}")
        if training.get("tokens_per_second") is not None:
            parts.append(f"{training['tokens_per_second']:.0f} tok/s")
        console.print(", ".join(parts))
    git = manifest.get("git") or {}
    console.print(f"code: tuneforge {manifest.get('tuneforge_version')} git {git.get('commit', '-')}"
                  f"{' (dirty)' if git.get('dirty') else ''}; seed {manifest.get('seed')}")
    for key, value in (manifest.get("exports") or {}).items():
        console.print(f"export {key}: {value}")
    if results.get("models"):
        from tuneforge.eval.pipeline import print_summary

        print_summary(results, console)
    if run.report.is_file():
        console.print(f"report: {run.report}")


@app.command("which")
def which(
    file: Path = typer.Argument(..., help="A model file found on disk: adapter weights, merged weights, a GGUF."),
    runs_dir: Path = RunsRoot,
    as_json: bool = typer.Option(False, "--json", help="Print the answer as JSON."),
) -> None:
    """Which run, data and code produced FILE (matched by its sha256 against every run's export lineage)."""
    from tuneforge.export.lineage import find_producer

    answer = find_producer(file, runs_dir)
    if as_json:
        typer.echo(json.dumps(answer, indent=2, default=str))
        return
    console = make_console(stderr=False)
    console.print(f"{answer['file']} (sha256 {answer['sha256'][:16]}...)", markup=False)
    console.print(f"run: {answer['run']} ({answer['matched_by']})", markup=False)
    if "provenance" in answer:
        for key, value in answer["provenance"].items():
            console.print(f"  {key}: {value}", markup=False)
        return
    base = answer.get("base_model") or {}
    console.print(f"base model: {base.get('source')}, weights sha256 {base.get('weights_sha256')}", markup=False)
    for split, info in (answer.get("datasets") or {}).items():
        console.print(f"data {split}: {info.get('path')} ({info.get('rows')} rows, sha256 {info.get('sha256')})",
                      markup=False)
    git = (answer.get("code") or {}).get("git") or {}
    console.print(f"code: tuneforge {answer['code'].get('tuneforge_version')} git {git.get('commit', '-')}"
                  f"{' (dirty)' if git.get('dirty') else ''}; config sha256 {answer.get('config_sha256')}; "
                  f"method {answer.get('method')}; seed {answer.get('seed')}", markup=False)
