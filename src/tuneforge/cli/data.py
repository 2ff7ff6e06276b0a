"""`tuneforge data ...`: inspect datasets. Parsing and printing only; the work lives in tuneforge.data."""
from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(help="Inspect datasets: how rows render and which tokens carry loss.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Inspect datasets: how rows render and which tokens carry loss."""
    # An explicit callback keeps `data` a command group even while it has a single command.


def _load_tokenizer(model: str, chat_template_path: str | None):
    # Imported lazily: model resolution pulls in transformers, which `tuneforge --help` must not pay for.
    from tuneforge.models.loading import load_tokenizer
    from tuneforge.models.sources import resolve_model

    return load_tokenizer(resolve_model(model), chat_template_path=chat_template_path)


@app.command()
def preview(
    data: str = typer.Argument(..., help="Dataset file (JSONL/JSON) or a bundled one like quickstart:train.jsonl."),
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m",
                              help="Model whose tokenizer and chat template render the row (catalog name, "
                              "folder, .gguf or hub id)."),
    index: int = typer.Option(0, "--index", "-i", help="Row to show (0-based; negative counts from the end)."),
    max_length: int = typer.Option(512, "--max-length", min=1, help="Truncate to this many tokens, as training does."),
    train_on: str = typer.Option("assistant", "--train-on", help="Which tokens carry loss: assistant or all."),
    data_format: str = typer.Option("auto", "--format", help="Row format: auto, chat, alpaca or prompt_completion."),
    chat_template: Optional[str] = typer.Option(None, "--chat-template",
                                                help="Jinja chat template file to use instead of the model's."),
) -> None:
    """Render one example exactly as training will, highlighting the tokens that carry loss."""
    from tuneforge.data.formats import load_dataset_file
    from tuneforge.data.preview import build_preview, preview_renderable
    from tuneforge.errors import DataError

    if train_on not in ("assistant", "all"):
        raise DataError(f"--train-on must be `assistant` or `all`, got {train_on!r}")
    loaded = load_dataset_file(data, data_format)
    tokenizer = _load_tokenizer(model, chat_template)
    shown = build_preview(loaded, tokenizer, index=index, max_length=max_length, train_on=train_on)
    Console().print(preview_renderable(loaded, shown, train_on, max_length))
