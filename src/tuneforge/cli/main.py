"""`tuneforge`: the command-line entry point; each command group lives in its own module."""
from __future__ import annotations

import functools
import os

import typer

from tuneforge import __version__
from tuneforge.cli import (
    config_cmd,
    data,
    eval_cmd,
    gate,
    models,
    monitor,
    plan,
    quickstart,
    rag,
    registry,
    runs,
    serve,
    sweep,
    train_cmd,
)
from tuneforge.errors import TuneforgeError

app = typer.Typer(
    name="tuneforge",
    help="From a raw dataset to a fine-tuned, evaluated, exported LLM, with numbers that prove it is better.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tuneforge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """tuneforge: fine-tune, evaluate and export LLMs from one CLI and one YAML file."""


app.command("quickstart")(quickstart.quickstart)
app.command("train", context_settings={"allow_extra_args": False})(train_cmd.train)
app.command("eval")(eval_cmd.evaluate)
app.command("export")(train_cmd.export)
app.command("gate")(gate.gate)
app.command("sweep")(sweep.sweep)
app.command("plan")(plan.plan)
app.add_typer(config_cmd.app, name="config")
app.add_typer(models.app, name="models")
app.add_typer(runs.app, name="runs")
app.add_typer(data.app, name="data")
app.add_typer(registry.app, name="registry")
app.add_typer(serve.app, name="serve")
app.add_typer(monitor.app, name="monitor")
app.add_typer(rag.app, name="rag")


def _report_error(error: TuneforgeError) -> None:
    from rich.markup import escape

    from tuneforge.console import make_console

    console = make_console()
    console.print(f"[bold red]error:[/] {escape(error.message)}", highlight=False)
    if error.hint:
        console.print(f"[bold]hint:[/] {escape(error.hint)}", highlight=False)


def _guarded(callback):
    """A user's mistake (TuneforgeError) becomes a clear message and a non-zero exit, never a traceback."""

    @functools.wraps(callback)
    def wrapper(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except TuneforgeError as error:
            _report_error(error)
            raise typer.Exit(error.exit_code) from None

    return wrapper


def _guard_commands(typer_app: typer.Typer) -> None:
    for command in typer_app.registered_commands:
        if command.callback is not None and not hasattr(command.callback, "__wrapped__"):
            command.callback = _guarded(command.callback)
    for group in typer_app.registered_groups:
        _guard_commands(group.typer_instance)


_guard_commands(app)


def main() -> None:
    # Tokenizers' thread pool fights torch for the two cores and warns after fork; we never need it.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    app()


if __name__ == "__main__":
    main()
