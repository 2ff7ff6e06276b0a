"""`tuneforge quickstart`: the main job on the bundled model and data, end to end, in minutes on a CPU."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import typer


def quickstart_config_path() -> Path:
    return Path(str(resources.files("tuneforge") / "assets" / "quickstart" / "quickstart.yaml"))


def quickstart(
    out_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Parent directory of the run directory."),
    name: str = typer.Option("quickstart", "--name", help="Run name; an existing run of this name is replaced."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides of the bundled config, "
                                          "e.g. training.max_steps=10."),
) -> None:
    """Fine-tune the bundled SmolLM2-135M-Instruct with LoRA on the bundled contact-extraction task, evaluate
    base and tuned on the held-out split, export adapter + merged model, and write runs/quickstart/report.html.

    Example: tuneforge quickstart
    """
    import time

    from tuneforge.config.loader import load_config
    from tuneforge.console import make_console
    from tuneforge.recipes.finetune import train_from_config

    console = make_console()
    started = time.perf_counter()
    path = quickstart_config_path()
    cfg = load_config(path, [f"output.dir={out_dir}", f"output.name={name}", "output.overwrite=true",
                             *(overrides or [])])
    console.print(f"[bold]quickstart[/] config {path}")
    train_from_config(cfg, config_path=str(path))
    console.print(f"[bold]quickstart finished in {time.perf_counter() - started:.0f} s[/]")
