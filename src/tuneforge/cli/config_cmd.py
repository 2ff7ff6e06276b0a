"""`tuneforge config validate CONFIG [a.b=value ...]` and `tuneforge config schema`."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from tuneforge.console import make_console

app = typer.Typer(help="Check run configs and show every option with its description.", no_args_is_help=True)


@app.command("validate")
def validate(
    config: Path = typer.Argument(..., help="Run config YAML file."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. training.max_steps=20 method.name=full."),
    show: bool = typer.Option(False, "--show", help="Print the resolved config (every default filled in)."),
) -> None:
    """Validate a config (unknown keys, wrong types, missing fields, files it names) and exit non-zero on any error.

    Nothing is loaded: a local model folder's context window is read from its config.json (catalog and hub
    models are checked when a run starts).
    """
    from tuneforge.config.loader import check_config_file, dump_config
    from tuneforge.objectives import check_method_allowed

    cfg = check_config_file(config, overrides or [])
    check_method_allowed(cfg)
    if show:
        typer.echo(dump_config(cfg))
    make_console().print(f"[green]ok[/] {config}: valid ({cfg.method.name} + {cfg.objective.name})")


def _walk(model_cls, prefix: str = ""):
    from pydantic import BaseModel

    for name, field in model_cls.model_fields.items():
        annotation = field.annotation
        key = f"{prefix}{name}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield key, "section", "", field.description or ""
            yield from _walk(annotation, key + ".")
        else:
            default = "(required)" if field.is_required() else repr(
                field.default_factory() if field.default_factory else field.default)
            type_name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
            yield key, type_name, default, field.description or ""


@app.command("schema")
def schema() -> None:
    """Every config key with its type, default and description."""
    from tuneforge.config.schema import RunConfig

    table = Table(title="tuneforge run config")
    for column in ("key", "type", "default", "description"):
        table.add_column(column, overflow="fold")
    for row in _walk(RunConfig):
        table.add_row(*row)
    make_console(stderr=False).print(table)
