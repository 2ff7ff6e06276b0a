"""Show one rendered example token by token, with the tokens that carry loss highlighted.

Mask bugs (a trained role header, an untrained end-of-turn token, an answer cut off by max_length) are
invisible in loss curves; seeing the exact rendered tokens is the fastest way to catch them.

Every format renders the way its objective trains on it: chat/alpaca and prompt_completion through the SFT
render (render.py), preference pairs and KTO rows through the completion-mask rule the DPO/KTO trainers use
(render_preference.tokenize_completion; a pair shows its chosen and its rejected sequence), raw text as
continued pretraining tokenizes a document (its tokens plus EOS, all trained).

On a terminal trained tokens are coloured; where colour is lost (piped output, a log file, NO_COLOR) trained
spans are wrapped in [[...]] instead, so the mask survives a copy-paste into an issue.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Group
from rich.table import Table
from rich.text import Text

from tuneforge.data.chat_template import TrainingTemplate, check_tool_rendering, prepare_training_template
from tuneforge.data.formats import CHAT_FORMATS, LoadedData
from tuneforge.data.render import _eos_id, render_example
from tuneforge.errors import DataError

# Two shades per class so adjacent token boundaries stay visible.
TRAINED_STYLES = ("bold black on green3", "bold black on dark_sea_green2")
CONTEXT_STYLES = ("grey70", "grey50")
MARK_OPEN, MARK_CLOSE = "[[", "]]"


@dataclass
class RenderedPart:
    """One token sequence of an example (a preference pair has two: chosen and rejected)."""

    title: str | None
    input_ids: list[int]
    mask: list[int]
    truncated: bool
    pieces: list[tuple[str, bool]]  # (decoded text, trained) per token group

    @property
    def trained_tokens(self) -> int:
        return sum(self.mask)


@dataclass
class Preview:
    index: int
    line: int
    template: TrainingTemplate | None
    parts: list[RenderedPart]
    objective: str = "sft"  # which trainer's rule made the mask: sft, preference, kto or cpt
    notes: list[str] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)  # extra summary rows, e.g. a KTO label

    # The first (for most formats the only) sequence, under the names callers used before pairs existed.
    @property
    def input_ids(self) -> list[int]:
        return self.parts[0].input_ids

    @property
    def mask(self) -> list[int]:
        return self.parts[0].mask

    @property
    def truncated(self) -> bool:
        return any(p.truncated for p in self.parts)

    @property
    def pieces(self) -> list[tuple[str, bool]]:
        return self.parts[0].pieces

    @property
    def trained_tokens(self) -> int:
        return sum(p.trained_tokens for p in self.parts)


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


def _part(tokenizer, title: str | None, rendered: dict) -> RenderedPart:
    ids, mask = list(rendered["input_ids"]), list(rendered["assistant_masks"])
    return RenderedPart(title, ids, mask, bool(rendered["truncated"]), token_pieces(tokenizer, ids, mask))


def build_preview(data: LoadedData, tokenizer, index: int = 0, max_length: int = 512,
                  train_on: str = "assistant") -> Preview:
    if not data.rows:
        raise DataError(f"{data.path} has no rows to preview")
    if not -len(data.rows) <= index < len(data.rows):
        raise DataError(f"--index {index} is out of range: {data.path} has {len(data.rows)} rows",
                        hint=f"use an index from 0 to {len(data.rows) - 1}")
    index %= len(data.rows)
    row, line = data.rows[index], data.line_numbers[index]
    if data.format in ("preference", "kto"):
        return _preference_preview(data, tokenizer, index, max_length)
    if data.format == "text":
        return _text_preview(tokenizer, row, index, line, max_length)
    template = None
    if data.format in CHAT_FORMATS:
        # The proof runs on the whole file, exactly as training would, so preview fails where training would.
        locations = [data.where(i) for i in range(len(data.rows))]
        if train_on == "assistant":
            template = prepare_training_template(tokenizer, data.rows, locations=locations)
        else:
            check_tool_rendering(tokenizer, data.rows, locations)
    out = render_example(row, tokenizer, template, max_length, train_on)
    return Preview(index=index, line=line, template=template, parts=[_part(tokenizer, None, out)])


def _preference_preview(data: LoadedData, tokenizer, index: int, max_length: int) -> Preview:
    from tuneforge.data.render_preference import to_trl_rows, tokenize_completion

    # The whole file decides the shape, as in training: one conversational row makes every row conversational.
    check_tool_rendering(tokenizer, [data.rows[index]], [data.where(index)])
    row = to_trl_rows(data.rows, data.format)[index]
    facts = []
    if data.format == "kto":
        facts.append(("label", "true (desirable)" if row["label"] else "false (undesirable)"))
        parts = [_part(tokenizer, "completion",
                       tokenize_completion(tokenizer, row["prompt"], row["completion"], max_length))]
    else:
        parts = [_part(tokenizer, side, tokenize_completion(tokenizer, row["prompt"], row[side], max_length))
                 for side in ("chosen", "rejected")]
    return Preview(index=index, line=data.line_numbers[index], template=None, parts=parts, objective=data.format,
                   facts=facts)


def _text_preview(tokenizer, row: dict, index: int, line: int, max_length: int) -> Preview:
    # As continued pretraining tokenizes a document (train/data_prep.pack_text): its tokens, then EOS.
    ids = list(tokenizer(row["text"], add_special_tokens=False)["input_ids"]) + [_eos_id(tokenizer)]
    notes = []
    if len(ids) > max_length:
        notes.append(f"this document is {len(ids)} tokens: continued pretraining packs documents into blocks of "
                     f"max_length {max_length}, so it continues into the next block (nothing is cut)")
    part = _part(tokenizer, None, {"input_ids": ids, "assistant_masks": [1] * len(ids), "truncated": False})
    return Preview(index=index, line=line, template=None, parts=[part], objective="cpt", notes=notes)


def highlighted_text(pieces: list[tuple[str, bool]], marks: bool = False) -> Text:
    """Tokens in alternating shades; with `marks`, trained spans are also wrapped in [[...]] (for output
    that loses colour)."""
    text = Text()
    inside = False
    for k, (piece, trained) in enumerate(pieces):
        if marks and trained != inside:
            text.append(MARK_OPEN if trained else MARK_CLOSE, style="bold")
            inside = trained
        style = (TRAINED_STYLES if trained else CONTEXT_STYLES)[k % 2]
        # Newlines are tokens too; show them, then break the line so the layout matches the real text.
        text.append(piece.replace("\n", "\u21b5\n"), style=style)
    if marks and inside:
        text.append(MARK_CLOSE, style="bold")
    return text


def legend(marks: bool) -> Text:
    out = Text("legend: ")
    if marks:
        out.append(f"{MARK_OPEN}trained (carries loss){MARK_CLOSE}", style=TRAINED_STYLES[0])
        out.append("  context (no loss) is unmarked")
    else:
        out.append(" trained ", style=TRAINED_STYLES[0])
        out.append("(carries loss) ", style=TRAINED_STYLES[1])
        out.append("  ")
        out.append("context ", style=CONTEXT_STYLES[0])
        out.append("(no loss)", style=CONTEXT_STYLES[1])
    out.append("  \u21b5 = newline token; shades alternate per token")
    return out


_OBJECTIVE_RULE = {
    "preference": "completion tokens of each side (DPO/ORPO/reward trainers' rule: the sequence after the prompt)",
    "kto": "completion tokens (KTO trainer's rule: the sequence after the prompt)",
    "cpt": "every token (continued pretraining)",
}


def preview_renderable(data: LoadedData, preview: Preview, train_on: str, max_length: int,
                       marks: bool = False) -> Group:
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
    for name, value in preview.facts:
        summary.add_row(name, value)
    for part in preview.parts:
        total = len(part.input_ids)
        name = f"tokens ({part.title})" if part.title else "tokens"
        share = part.trained_tokens / total if total else 0.0
        summary.add_row(name, f"{total}" + (f" (truncated to max_length {max_length})" if part.truncated else "")
                        + f"; trained {part.trained_tokens} ({share:.0%})")
    rule = _OBJECTIVE_RULE.get(preview.objective, f"train_on={train_on}")
    summary.add_row("trained", rule)
    body: list = [summary]
    for part in preview.parts:
        body.append(Text(""))
        if part.title:
            body.append(Text(f"{part.title}:", style="bold"))
        body.append(highlighted_text(part.pieces, marks))
    body += [Text(""), legend(marks)]
    if preview.trained_tokens == 0:
        body.append(Text("warning: this example has no trained tokens and adds nothing to the loss",
                         style="bold yellow"))
    if preview.truncated:
        body.append(Text("warning: this example is longer than max_length and was cut on the right",
                         style="bold yellow"))
    body += [Text(f"note: {note}") for note in preview.notes]
    return Group(*body)
