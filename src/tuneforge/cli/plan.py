"""`tuneforge plan`: expected memory, time and tokens of a run, before any weight is loaded."""
from __future__ import annotations

import json
from pathlib import Path

import typer


def plan(
    config: Path = typer.Argument(..., help="Run config YAML, as for `tuneforge train`."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. training.batch_size=4."),
    devices: list[str] = typer.Option(["this"], "--device", help="this (this machine, calibrated by a few-second "
                                      "benchmark, cached) or a named accelerator: a100-80gb, h100, h200, l4, "
                                      "rtx4090. Repeat for several."),
    as_json: bool = typer.Option(False, "--json", help="Print the plans as JSON on stdout (keyed by device)."),
    recalibrate: bool = typer.Option(False, "--recalibrate", help="Measure this machine again instead of using "
                                     "the cached calibration (e.g. after the load on it changed)."),
) -> None:
    """Plan a run: peak memory by component, seconds per step, total time, tokens per step, and whether it fits.

    Example: tuneforge plan examples/full-finetune.yaml --device this --device a100-80gb

    Reads only the model's config.json and safetensors headers, and tokenises the training data; nothing is
    trained. `tuneforge train` prints the same plan for this machine and refuses a run that does not fit.
    """
    from tuneforge.config.loader import load_config
    from tuneforge.console import make_console
    from tuneforge.plan.build import make_plans
    from tuneforge.plan.render import print_plans
    from tuneforge.recipes.finetune import base_model_ref

    cfg = load_config(config, overrides or [])
    console = make_console()
    plans = make_plans(cfg, devices, base_model_ref(cfg.model.source, cfg.output.dir), console=console,
                       recalibrate=recalibrate)
    if as_json:
        typer.echo(json.dumps({p.device: p.to_dict() for p in plans}, indent=2))
        return
    print_plans(plans, make_console(stderr=False))
