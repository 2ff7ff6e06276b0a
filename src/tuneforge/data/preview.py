"""Show one rendered example token by token, with the tokens that carry loss highlighted.

Mask bugs (a trained role header, an untrained end-of-turn token, an answer cut off by max_length) are
invisible in loss curves; seeing the exact rendered tokens is the fastest way to catch them.
"""
from __future__ import annotations

from dataclasses import dataclass

from rich.console import Group
from rich.table import Table
from rich.text import Text

from tuneforge.data.chat_template import TrainingTemplate, prepare_training_template
from tuneforge.data.formats import LoadedData
from tuneforge.data.render import render_example
from tuneforge.errors import DataError

# Two shades per class so adjacent token boundaries stay visible.
TRAINED_STYLES = ("bold black on green3", "bold black on dark_sea_green2")
CONTEXT_STYLES = ("grey70", "grey50")


@dataclass
class Preview:
    index: int
    line: int
    input_ids: list[int]
    mask: list[int]
    truncated: bool
    template: TrainingTemplate | None
    pieces: list[tuple[str, bool]]  # (decoded text, trained) per token group

    @property
    def trained_tokens(self) -> int:
        return sum(self.mask)


def token_pieces(tokenizer, ids: list[int], mask: list[int]) -> list[tuple[str, bool]]:
    """Decode token by token; a token that is only part of a UTF-8 character decodes to U+FFFD, so such
    tokens are merged with their successors until the group decodes cleanly."""
    pieces: list[tuple[str, bool]] = []
    i = 0
    while i < len(ids):
        j = i + 1
        text = tokenizer.decode(ids[i:j])
        while "\ufffd" in text and j < len(ids) and j - i < 4:
            j += 1
            text = tokenizer.decode(ids[i:j])
        pieces.append((text, any(mask[i:j])))
        i = j
    return pieces


def build_preview(data: LoadedData, tokenizer, index: int = 0, max_length: int = 512,
                  train_on: str = "assistant") -> Preview:
    if not data.rows:
        raise DataError(f"{data.path} has no rows to preview")
    if not -len(data.rows) <= index < len(data.rows):
        raise DataError(f"--index {index} is out of range: {data.path} has {len(data.rows)} rows",
                        hint=f"use an index from 0 to {len(data.rows) - 1}")
    index %= len(data.rows)
    template = None
    if data.format != "prompt_completion":
        locations = [data.where(i) for i in range(len(data.rows))]
        if train_on == "assistant":
            # The proof runs on the whole file, exactly as training would, so preview fails where training would.
            template = prepare_training_template(tokenizer, data.rows, locations=locations)
    out = render_example(data.rows[index], tokenizer, template, max_length, train_on)
    return Preview(index=index, line=data.line_numbers[index], input_ids=out["input_ids"],
                   mask=out["assistant_masks"], truncated=out["truncated"], template=template,
                   pieces=token_pieces(tokenizer, out["input_ids"], out["assistant_masks"]))


def highlighted_text(pieces: list[tuple[str, bool]]) -> Text:
    text = Text()
    for k, (piece, trained) in enumerate(pieces):
        style = (TRAINED_STYLES if trained else CONTEXT_STYLES)[k % 2]
        # Newlines are tokens too; show them, then break the line so the layout matches the real text.
        shown = piece.replace("\n", "\u21b5\n")
        text.append(shown, style=style)
    return text


def preview_renderable(data: LoadedData, preview: Preview, train_on: str, max_length: int) -> Group:
    total = len(preview.input_ids)
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("file", f"{data.path} ({len(data.rows)} rows, format {data.format})")
    summary.add_row("example", f"index {preview.index} (line {preview.line})")
    if preview.template is not None:
        t = preview.template
        how = (f"derived ({t.strategy}), proven byte-identical to the tokenizer's template on {t.verified_rows} rows"
               if t.derived else "the tokenizer's own (has {% generation %} markers)")
        summary.add_row("template", how)
    summary.add_row("tokens", f"{total}" + (f" (truncated to max_length {max_length})" if preview.truncated else ""))
    share = preview.trained_tokens / total if total else 0.0
    summary.add_row("trained", f"{preview.trained_tokens} ({share:.0%}), train_on={train_on}")
    legend = Text("legend: ")
    legend.append(" trained (carries loss) ", style=TRAINED_STYLES[0])
    legend.append("  ")
    legend.append(" context (no loss) ", style="black on grey70")
    legend.append("  \u21b5 = newline token; shades alternate per token")
    notes = []
    if preview.trained_tokens == 0:
        notes.append(Text("warning: this example has no trained tokens and adds nothing to the loss",
                          style="bold yellow"))
    if preview.truncated:
        notes.append(Text("warning: this example is longer than max_length and was cut on the right",
                          style="bold yellow"))
    return Group(summary, Text(""), highlighted_text(preview.pieces), Text(""), legend, *notes)
