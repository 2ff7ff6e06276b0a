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
    nnodes: int = typer.Option(1, "--nnodes", min=1, help="Machines taking part (multi-node; see docs/distributed.md)."),
    node_rank: int = typer.Option(0, "--node-rank", min=0, help="This machine's index, 0 .. nnodes-1."),
    master_addr: str = typer.Option(None, "--master-addr", help="Address of the node with --node-rank 0."),
    master_port: int = typer.Option(29500, "--master-port", help="Rendezvous port on the master node."),
) -> None:
    """Fine-tune a model as CONFIG says: train, evaluate base vs tuned, export, and write report.html.

    Example: tuneforge train examples/lora-contact-extraction.yaml training.max_steps=40

    Example: tuneforge train examples/distributed/ddp-lora.yaml --nproc 2 (then --resume after an interruption)
    """
    from tuneforge.config.loader import load_config
    from tuneforge.train.launch import LaunchPlan, is_main_process, launch_distributed
    from tuneforge.train.runner import train_from_config

    cfg = load_config(config, overrides or [])
    plan = LaunchPlan(nproc=nproc, nnodes=nnodes, node_rank=node_rank, master_addr=master_addr,
                      master_port=master_port)
    # FSDP and DeepSpeed always go through torchrun (even with one process); a process torchrun started trains.
    if plan.distributed or (cfg.training.distributed != "ddp" and "LOCAL_RANK" not in os.environ):
        raise typer.Exit(launch_distributed(cfg, str(config), list(overrides or []), plan, resume=resume))
    # Under torchrun every rank runs this; only rank 0 prints, the others train silently.
    train_from_config(cfg, config_path=str(config), resume=resume,
                      console=make_console(quiet=not is_main_process()))


def export(
    run: str = typer.Argument(..., help="Run name (under --runs-dir) or run directory."),
    out: Path = typer.Option(None, "--out", help="Merged folder to write (default: RUN/merged)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where run names are looked up."),
) -> None:
    """Merge a run's PEFT adapter into its base model and save a safetensors folder with tokenizer and chat template.

    Example: tuneforge export quickstart --out exported/contact-extractor
    """
    from tuneforge.config.loader import load_config
    from tuneforge.errors import RunError
    from tuneforge.export.merge import merge_adapter_folder
    from tuneforge.methods import get_method
    from tuneforge.models.loading import load_tokenizer
    from tuneforge.objectives import get_objective
    from tuneforge.models.sources import resolve_model
    from tuneforge.runs.rundir import open_run

    console = make_console()
    run_dir = open_run(run, runs_dir)
    manifest = run_dir.read_manifest()
    source = (manifest.get("base_model") or {}).get("source")
    if not source or not run_dir.config.is_file():
        raise RunError(f"{run_dir.path}: no base_model in manifest.json or no config.yaml; cannot rebuild the merge")
    cfg = load_config(run_dir.config)
    # The run's own method loads the base (QLoRA: the same 4-bit weights it trained on) and merges its way.
    method = get_method(cfg.method)
    if not method.can_merge:
        raise RunError(f"run {run_dir.name} used method {method.name}, which learns inputs rather than weight "
                       "deltas: there is nothing to merge", hint=f"serve {run_dir.adapter} on the base model")
    resolved = resolve_model(source)
    tokenizer = load_tokenizer(resolved, cfg.model.chat_template_path)
    target = out or run_dir.merged
    lineage = {"run": run_dir.name, "base_model": source, "base_weights_sha256": resolved.weights_sha256}
    # The objective shapes the base the adapter was trained on (reward: the backbone under a score head).
    base = get_objective(cfg.objective).prepare_model(method.load_base(resolved, cfg.model.dtype))
    result = merge_adapter_folder(base, run_dir.adapter, tokenizer, target, lineage, merge=method.merged_model)
    console.print(f"[green]merged[/] {target} (max |logit diff| vs adapter {result['max_abs_logit_diff_vs_adapter']:.2e})")
