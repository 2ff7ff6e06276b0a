"""`tuneforge sweep`: explore hyper-parameters of a training config; every trial is a normal run."""
from __future__ import annotations

from pathlib import Path

import typer

from tuneforge.console import make_console


def sweep(
    config: Path = typer.Argument(..., help="Run config YAML, as for `tuneforge train`."),
    params: list[str] = typer.Option(..., "--param", "-p", help="KEY=V1,V2,... (a grid axis) or KEY=int:A..B, "
                                     "float:A..B, log:A..B (a range; needs --trials). Repeat per parameter."),
    metric: str = typer.Option(..., "--metric", help="Objective: a metric of the tuned model in eval/results.json "
                               "(e.g. json_fields, exact_match_norm, rougeL, validation_loss)."),
    direction: str = typer.Option(None, "--direction", help="maximize or minimize (default: from the metric)."),
    trials: int = typer.Option(None, "--trials", min=1, help="Trials in all (default: the whole grid)."),
    budget: str = typer.Option(None, "--budget", help="Wall-clock budget (90s, 30m, 2h): no trial starts after it."),
    name: str = typer.Option(None, "--name", help="Study name (default: the config's file name); resuming needs "
                             "the same name and storage."),
    storage: str = typer.Option(None, "--storage", help="Database URL to share a study between machines "
                                "(default: SQLite in the sweep folder)."),
    out: Path = typer.Option(None, "--out", help="Sweep folder (default: <output.dir>/sweeps/<name>)."),
    overrides: list[str] = typer.Option(None, "--set", help="A fixed override for every trial, e.g. "
                                        "training.max_steps=40. Repeatable."),
    pruner: str = typer.Option("median", "--pruner", help="median, threshold (with --prune-above) or none; fed the "
                               "validation loss at each evaluation."),
    prune_above: float = typer.Option(None, "--prune-above", help="Threshold pruner: stop a trial as soon as its "
                                      "validation loss is above this."),
    seed: int = typer.Option(0, "--seed", help="Sampler seed (the training seed comes from the config)."),
    verbose: bool = typer.Option(False, "--verbose", help="Show each trial's training output."),
) -> None:
    """Run a grid or a search space of trainings as an Optuna study; resumable, pruned, budgeted.

    Example: tuneforge sweep examples/sweep-routing.yaml --param training.learning_rate=2e-4,1e-3,3e-3
    --param training.epochs=1,3 --metric exact_match_norm --budget 30m

    Writes <sweep>/leaderboard.html, leaderboard.json and best.yaml (`tuneforge train <sweep>/best.yaml`).
    Run the same command again after an interruption: finished trials are kept, a killed one runs again.
    """
    from rich.console import Console

    from tuneforge.sweep import SweepSettings, parse_budget, parse_params, run_sweep
    from tuneforge.sweep.leaderboard import render_table

    settings = SweepSettings(
        config=config, params=parse_params(list(params)), metric=metric, direction=direction, trials=trials,
        budget_s=parse_budget(budget), name=name, storage=storage, out=out, overrides=list(overrides or []),
        pruner=pruner, prune_threshold=prune_above, seed=seed,
    )
    console = make_console()
    summary = run_sweep(settings, console, trial_console=None if verbose else make_console(quiet=True))
    Console(soft_wrap=True).print(render_table(summary["trials"], [s.name for s in settings.params], metric))
    if not summary["best"]:
        raise typer.Exit(1)
