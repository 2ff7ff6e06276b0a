"""`tuneforge train` and `tuneforge export`."""
from __future__ import annotations

import os
from pathlib import Path

import typer

from tuneforge.console import make_console


def train(
    config: Path = typer.Argument(..., help="Run config YAML (see examples/ and `tuneforge config schema`)."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. training.max_steps=20 output.name=try1."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run (output.name, else the newest run of "
                                "this config) from its newest complete checkpoint."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Processes per node: N > 1 runs data-parallel under torchrun."),
    nnodes: int = typer.Option(1, "--nnodes", min=1,
                               help="Machines taking part (multi-node; see docs/distributed.md)."),
    node_rank: int = typer.Option(0, "--node-rank", min=0, help="This machine's index, 0 .. nnodes-1."),
    master_addr: str = typer.Option(None, "--master-addr", help="Address of the node with --node-rank 0."),
    master_port: int = typer.Option(29500, "--master-port", help="Rendezvous port on the master node."),
    no_plan_check: bool = typer.Option(False, "--no-plan-check", help="Start even when the plan says the run does "
                                       "not fit in this machine's memory (same as training.plan_check=false)."),
) -> None:
    """Fine-tune a model as CONFIG says: train, evaluate base vs tuned, export, and write report.html.

    Example: tuneforge train examples/lora-contact-extraction.yaml training.max_steps=40

    Example: tuneforge train examples/distributed/ddp-lora.yaml --nproc 2 (then --resume after an interruption)
    """
    from tuneforge.config.loader import load_config
    from tuneforge.recipes.finetune import train_from_config
    from tuneforge.train.launch import LaunchPlan, is_main_process, launch_distributed

    overrides = [*(overrides or []), *(["training.plan_check=false"] if no_plan_check else [])]
    cfg = load_config(config, overrides)
    plan = LaunchPlan(nproc=nproc, nnodes=nnodes, node_rank=node_rank, master_addr=master_addr,
                      master_port=master_port)
    # FSDP and DeepSpeed always go through torchrun (even with one process); a process torchrun started trains.
    if plan.distributed or (cfg.training.distributed != "ddp" and "LOCAL_RANK" not in os.environ):
        raise typer.Exit(launch_distributed(cfg, str(config), list(overrides or []), plan, resume=resume))
    # Under torchrun every rank runs this; only rank 0 prints, the others train silently.
    console = make_console(quiet=not is_main_process())
    try:
        train_from_config(cfg, config_path=str(config), resume=resume, console=console)
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM (see tuneforge.train.launch.supervised_run)
        import shlex
        import signal

        from rich.markup import escape

        from tuneforge.train.launch import interruption_name

        name = interruption_name(interrupt)
        again = shlex.join(["tuneforge", "train", str(config), *(overrides or []), "--resume"])
        console.print(f"[yellow]interrupted[/] by {name}; the run is resumable: {escape(again)}", highlight=False)
        raise typer.Exit(128 + int(getattr(signal, name))) from None


def export(
    run: str = typer.Argument(..., help="Run name (under --runs-dir) or run directory."),
    out: Path = typer.Option(None, "--out", help="Folder to write: the merged model (default RUN/merged), or with "
                             "--format gguf alone the GGUF files (default RUN/gguf)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where run names are looked up."),
    formats: list[str] = typer.Option(["merged"], "--format", help="merged (safetensors folder), gguf (llama.cpp "
                                      "file from the merged model) and/or gguf-lora (the LoRA adapter as a llama.cpp "
                                      "adapter on the base's f16 GGUF); repeat for several."),
    quants: list[str] = typer.Option(["q8_0"], "--quant", help="GGUF weight type: f16, q8_0 or q4_0; repeat for "
                                     "several files."),
) -> None:
    """Merge a run's PEFT adapter into its base model (safetensors folder with tokenizer and chat template), and/or
    write GGUF files for llama.cpp that are checked in llama.cpp itself before they are kept.

    Example: tuneforge export quickstart --out exported/contact-extractor

    Example: tuneforge export quickstart --format gguf --quant f16 --quant q8_0 --quant q4_0
    """
    from tuneforge.errors import ConfigError
    from tuneforge.integrations.quiet import quiet_third_party_output
    from tuneforge.recipes.export import export_run

    bad = [f for f in formats if f not in ("merged", "gguf", "gguf-lora")]
    if bad:
        raise ConfigError(f"--format {', '.join(bad)}: choose merged, gguf and/or gguf-lora")
    quiet_third_party_output()
    console = make_console()
    exports = export_run(run, out=out, runs_dir=runs_dir, console=console, formats=tuple(formats),
                         quants=tuple(quants))
    if "merged" in formats and "merged_max_abs_logit_diff_vs_adapter" in exports:
        console.print(f"[green]merged[/] {exports['merged']} "
                      f"(max |logit diff| vs adapter {exports['merged_max_abs_logit_diff_vs_adapter']:.2e})")
