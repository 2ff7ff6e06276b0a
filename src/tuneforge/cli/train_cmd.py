"""`tuneforge train`, `tuneforge eval` and `tuneforge export`."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def train(
    config: Path = typer.Argument(..., help="Run config YAML (see examples/ and `tuneforge config schema`)."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. training.max_steps=20 output.name=try1."),
) -> None:
    """Fine-tune a model as CONFIG says: train, evaluate base vs tuned, export, and write report.html.

    Example: tuneforge train examples/lora-contact-extraction.yaml training.max_steps=40
    """
    from tuneforge.config.loader import load_config
    from tuneforge.train.runner import train_from_config

    cfg = load_config(config, overrides or [])
    train_from_config(cfg, config_path=str(config))


def evaluate(
    model: str = typer.Argument(..., help="A run directory or name, a model folder, a .gguf file, a catalog name or a hub id."),
    data: str = typer.Option(..., "--data", help="Test data file (chat, alpaca or prompt/completion JSONL)."),
    base: str = typer.Option(None, "--base", help="A second model to compare against (default for a run: its base model)."),
    metric: str = typer.Option("both", "--metric", help="exact_match, json_fields or both."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Generation budget per item (greedy)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Items generated together."),
    max_items: int = typer.Option(None, "--max-items", help="Evaluate only the first N items."),
    out: Path = typer.Option(None, "--out", help="Write results.json here (default: RUN/eval/ for a run, else ./eval-results/)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where run names are looked up."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
) -> None:
    """Evaluate a model on a test set; with two models, compare them with a paired bootstrap 95% interval.

    Example: tuneforge eval runs/quickstart --data quickstart:test.jsonl
    """
    from tuneforge.eval.standalone import evaluate_command

    evaluate_command(model=model, data=data, base=base, metric=metric, max_new_tokens=max_new_tokens,
                     batch_size=batch_size, max_items=max_items, out=out, runs_dir=runs_dir, seed=seed,
                     console=Console(stderr=True))


def export(
    run: str = typer.Argument(..., help="Run name (under --runs-dir) or run directory."),
    out: Path = typer.Option(None, "--out", help="Merged folder to write (default: RUN/merged)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where run names are looked up."),
) -> None:
    """Merge a run's PEFT adapter into its base model and save a safetensors folder with tokenizer and chat template.

    Example: tuneforge export quickstart --out exported/contact-extractor
    """
    from tuneforge.export.merge import merge_adapter_folder
    from tuneforge.models.loading import load_model, load_tokenizer
    from tuneforge.models.sources import resolve_model
    from tuneforge.runs.rundir import open_run

    console = Console(stderr=True)
    run_dir = open_run(run, runs_dir)
    manifest = run_dir.read_manifest()
    source = (manifest.get("base_model") or {}).get("source")
    if not source:
        from tuneforge.errors import RunError

        raise RunError(f"{run_dir.manifest}: no base_model recorded; cannot rebuild the merged model")
    resolved = resolve_model(source)
    tokenizer = load_tokenizer(resolved)
    target = out or run_dir.merged
    lineage = {"run": run_dir.name, "base_model": source, "base_weights_sha256": resolved.weights_sha256}
    result = merge_adapter_folder(load_model(resolved), run_dir.adapter, tokenizer, target, lineage)
    console.print(f"[green]merged[/] {target} (max |logit diff| vs adapter {result['max_abs_logit_diff_vs_adapter']:.2e})")
