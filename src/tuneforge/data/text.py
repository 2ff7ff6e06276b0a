"""Text views of normalised rows, and the shared plumbing of the data-quality engines.

Every quality engine (dedup, leakage, PII, split, mix) works on rows already normalised by
`tuneforge.data.formats`: `{"messages": [...], "meta": {...}}` or `{"prompt", "completion", "meta"}`.
This module is the single place that decides what "the text" of such a row is, so that two engines
never disagree about whether two rows are the same.

Views:
    full_text    every message (or prompt + completion) - what the model is trained on.
    prompt_text  everything before the final assistant turn - what the model is asked.
    answer_text  the final assistant turn - what the model is taught to say.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar

import numpy as np

T = TypeVar("T")

Row = Mapping[str, Any]

# Separator between messages: a newline keeps message boundaries from gluing two words together
# (which would invent tokens that appear in neither message and skew n-gram statistics).
_SEP = "\n"


def _content_text(content: Any) -> str:
    """Message content as plain text; multimodal part lists contribute their text parts only."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return _SEP.join(parts)
    return str(content)


def _last_assistant(messages: Sequence[Mapping[str, Any]]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "assistant":
            return i
    return None


def full_text(row: Row) -> str:
    """All trainable text of a row. Roles are prefixed so that a user turn and an assistant turn with
    the same words are not the same row."""
    messages = row.get("messages")
    if messages is not None:
        return _SEP.join(f"{m.get('role', '')}: {_content_text(m.get('content'))}" for m in messages)
    if "chosen" in row:  # preference rows: the chosen answer is what training reinforces
        return _SEP.join((_content_text(row.get("prompt")), _content_text(row.get("chosen"))))
    if "prompt" in row or "completion" in row:
        return _SEP.join((_content_text(row.get("prompt")), _content_text(row.get("completion"))))
    return _content_text(row.get("text"))


def prompt_text(row: Row) -> str:
    """The question side: every message before the final assistant turn (system prompt included,
    because the same question under a different system prompt can legitimately get another answer)."""
    messages = row.get("messages")
    if messages is not None:
        end = _last_assistant(messages)
        head = messages if end is None else messages[:end]
        return _SEP.join(f"{m.get('role', '')}: {_content_text(m.get('content'))}" for m in head)
    return _content_text(row.get("prompt"))


def answer_text(row: Row) -> str:
    """The answer side: the final assistant message, the completion, or the chosen response."""
    messages = row.get("messages")
    if messages is not None:
        end = _last_assistant(messages)
        return "" if end is None else _content_text(messages[end].get("content"))
    if "completion" in row:
        return _content_text(row.get("completion"))
    if "chosen" in row:
        return _content_text(row.get("chosen"))
    return _content_text(row.get("text"))


VIEWS = {"full": full_text, "prompt": prompt_text, "answer": answer_text}


def view(row: Row, name: str) -> str:
    try:
        return VIEWS[name](row)
    except KeyError:
        raise ValueError(f"unknown text view {name!r}; expected one of {sorted(VIEWS)}") from None


# --- normalisation ----------------------------------------------------------------------------

# \W covers punctuation and symbols in every script; "_" is a word character to `re` but is
# punctuation to a reader, so it is removed too.
_PUNCT = re.compile(r"[\W_]+")


def normalize(text: str, *, ignore_punctuation: bool = False) -> str:
    """Canonical form for duplicate detection: NFKC (full-width and ligature forms fold to ASCII),
    casefold (stronger than lower() for e.g. German sharp s), whitespace runs collapsed.

    With `ignore_punctuation`, punctuation becomes a space rather than vanishing, so "a,b" and "a b"
    match while "don't" and "dont" do not accidentally differ from "don t" in only one direction.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    if ignore_punctuation:
        text = _PUNCT.sub(" ", text)
    # str.split() splits on the same Unicode whitespace as \s but runs ~3x faster than re.sub.
    return " ".join(text.split())


# --- stable hashing -----------------------------------------------------------------------------
# Python's hash() of str is salted per process, so results would change between runs. Hashing token
# by token in Python costs ~0.2 us per token (45 s for 100k rows of 225 words across two engines),
# so tokens are hashed in bulk with numpy instead: the text's code points feed one prefix sum of a
# polynomial hash, and each token's hash is a difference of two prefix values, rescaled by the
# modular inverse of its start power. Arithmetic is mod 2^64 (numpy uint64 wraps silently).

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_BASE = 0x100000001B3  # odd, so invertible mod 2^64
_BASE_INV = pow(_BASE, -1, 1 << 64)
_pow_cache: list[np.ndarray] = [np.ones(1, np.uint64), np.ones(1, np.uint64)]


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: spreads the polynomial hash over all 64 bits."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


# Batches are cut so their text stays under this many code points; it bounds the cached power
# tables (16 bytes per code point) and the per-batch temporaries.
_BATCH_CODE_POINTS = 1 << 22


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """BASE^j and BASE^-j for j < n (cached up to the batch budget, grown by doubling)."""
    pw, inv = _pow_cache
    if pw.size < n:
        size = max(n, min(2 * pw.size, _BATCH_CODE_POINTS + 1), 4096)
        pw = np.full(size, _BASE, dtype=np.uint64)
        pw[0] = 1
        inv = np.full(size, _BASE_INV, dtype=np.uint64)
        inv[0] = 1
        pw, inv = np.cumprod(pw, dtype=np.uint64), np.cumprod(inv, dtype=np.uint64)
        if size <= _BATCH_CODE_POINTS + 1:  # one huge document must not pin its tables forever
            _pow_cache[:] = [pw, inv]
    return pw[:n], inv[:n]


def _span_hashes(codes: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    pw, inv = _powers(codes.size + 1)
    prefix = np.zeros(codes.size + 1, dtype=np.uint64)
    np.cumsum(codes * pw[: codes.size], out=prefix[1:])
    raw = (prefix[ends] - prefix[starts]) * inv[starts]
    # The length term separates spans that differ only by trailing NUL code points.
    return _fmix64(raw ^ ((ends - starts).astype(np.uint64) * _GOLDEN))


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)


def word_hashes(text: str) -> np.ndarray:
    """A stable 64-bit hash per whitespace token of `text` (uint64 array, in order)."""
    hashes, _ = batch_word_hashes([text])
    return hashes


def batch_word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token hashes of many texts in one pass (numpy call overhead, not arithmetic, dominates per
    row). Returns (hashes, offsets): text r's tokens are hashes[offsets[r]:offsets[r + 1]]."""
    joined = [" ".join(t.split()) for t in texts]
    if len(joined) > 1 and sum(len(j) for j in joined) > _BATCH_CODE_POINTS:
        half = len(joined) // 2
        (h1, o1), (h2, o2) = batch_word_hashes(joined[:half]), batch_word_hashes(joined[half:])
        return np.concatenate((h1, h2)), np.concatenate((o1, o2[1:] + o1[-1]))
    counts = np.fromiter((j.count(" ") + 1 if j else 0 for j in joined), np.int64, len(joined))
    offsets = np.zeros(len(joined) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    big = " ".join(j for j in joined if j)
    if not big:
        return np.empty(0, np.uint64), offsets
    codes = _code_points(big)
    spaces = np.flatnonzero(codes == 32)
    starts = np.concatenate(([0], spaces + 1))
    ends = np.concatenate((spaces, [codes.size]))
    return _span_hashes(codes, starts, ends), offsets


def batch_ngram_hashes(
    hashes: np.ndarray, offsets: np.ndarray, n: int, *, short: Literal["whole", "skip"] = "whole"
) -> tuple[np.ndarray, np.ndarray]:
    """Word n-gram hashes per text from `batch_word_hashes` output, never spanning two texts.
    A text with fewer than n tokens yields one hash of all its tokens (`short="whole"`) or none
    (`short="skip"`). Returns (ngram_hashes, ngram_offsets) like `batch_word_hashes`."""
    if n < 1:
        raise ValueError("n-gram size must be >= 1")
    counts = np.diff(offsets)
    windows = np.maximum(counts - n + 1, 0)
    grams = _combine(hashes, n)  # one per global start position, valid or not
    # Valid starts: the window lies inside one text. Build them per text from its offset.
    starts = np.repeat(offsets[:-1], windows) + _ranges(windows)
    out = grams[starts] if grams.size else np.empty(0, np.uint64)
    out_counts = windows
    short_rows = np.flatnonzero((counts > 0) & (counts < n)) if short == "whole" else np.empty(0, int)
    if short_rows.size:
        # Rare: rows shorter than n. Splice their whole-text hash in, in row order.
        extra = {int(r): _combine(hashes[offsets[r] : offsets[r + 1]], int(counts[r]))[0] for r in short_rows}
        out_counts = windows.copy()
        out_counts[short_rows] = 1
        pieces, pos = [], 0
        for r in range(counts.size):
            if r in extra:
                pieces.append(np.array([extra[r]], dtype=np.uint64))
            else:
                pieces.append(out[pos : pos + windows[r]])
                pos += windows[r]
        out = np.concatenate(pieces) if pieces else out
    out_offsets = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(out_counts, out=out_offsets[1:])
    return out, out_offsets


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(k) for each k in lengths."""
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, np.int64)
    firsts = np.cumsum(lengths) - lengths
    return np.arange(total, dtype=np.int64) - np.repeat(firsts, lengths)


def _combine(hashes: np.ndarray, n: int) -> np.ndarray:
    """Hash of every window of n consecutive token hashes (order-sensitive: distinct odd
    multipliers per position)."""
    m = hashes.size - n + 1
    if m <= 0:
        return np.empty(0, np.uint64)
    mult = _position_multipliers(n)
    acc = hashes[:m] * mult[0]
    for j in range(1, n):
        acc += hashes[j : j + m] * mult[j]
    return _fmix64(acc + np.uint64(n))


_MULT_CACHE: dict[int, np.ndarray] = {}


def _position_multipliers(n: int) -> np.ndarray:
    mult = _MULT_CACHE.get(n)
    if mult is None:
        mult = _fmix64(np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN) | np.uint64(1)
        _MULT_CACHE[n] = mult
    return mult


def ngram_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """64-bit hashes of every contiguous n-gram of token hashes. A sequence shorter than n yields
    one hash of the whole sequence, so short rows still take part; an empty one yields none."""
    if n < 1:
        raise ValueError("n-gram size must be >= 1")
    if hashes.size == 0:
        return hashes
    return _combine(hashes, min(n, hashes.size))


def char_ngram_hashes(text: str, n: int) -> np.ndarray:
    """A stable 64-bit hash per character n-gram (the whole text when shorter than n)."""
    if not text:
        return np.empty(0, np.uint64)
    codes = _code_points(text)
    n = min(n, codes.size)
    starts = np.arange(codes.size - n + 1)
    return _span_hashes(codes, starts, starts + n)




# --- line numbers and progress ---------------------------------------------------------------


def resolve_lines(n_rows: int, line_numbers: Sequence[int] | None) -> Sequence[int]:
    """Source line per row; without a mapping, row i is assumed to sit on line i + 1 (plain JSONL)."""
    if line_numbers is None:
        return range(1, n_rows + 1)
    if len(line_numbers) != n_rows:
        raise ValueError(f"line_numbers has {len(line_numbers)} entries for {n_rows} rows")
    return line_numbers


def format_lines(lines: Iterable[int], limit: int = 20) -> str:
    """'3, 7, 9 and 12 more' - error messages must name lines without printing a million of them."""
    lines = list(lines)
    head = ", ".join(str(x) for x in lines[:limit])
    return head if len(lines) <= limit else f"{head} and {len(lines) - limit} more"


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of up to `size` items; engines hash rows in chunks for numpy efficiency."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def progress_iter(
    items: Iterable[T], *, total: int | None, description: str, enabled: bool
) -> Iterator[T]:
    """Yield items, drawing a rich progress bar with a rows/s rate on stderr when enabled."""
    if not enabled:
        yield from items
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    from tuneforge.console import make_console

    class _Rate(TextColumn):
        def __init__(self) -> None:
            super().__init__("")

        def render(self, task):  # type: ignore[override]
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} rows/s" if speed else "- rows/s", style="progress.data.speed")

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=make_console(), transient=False) as bar:
        task = bar.add_task(description, total=total)
        # Updating the bar per row would cost more than the work on short rows; batch the updates.
        pending = 0
        for item in items:
            yield item
            pending += 1
            if pending == 512:
                bar.advance(task, pending)
                pending = 0
        bar.advance(task, pending)


def template_fields(template: str, where: str) -> list[str]:
    """The {field} placeholders of a prompt template (task YAMLs, `data select --prompt`); errors name `where`."""
    import string

    from tuneforge.errors import ConfigError

    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"{where}: prompt: {exc}", hint="write {{ and }} for literal braces") from None
    for name in names:
        if not name.isidentifier():
            raise ConfigError(f"{where}: prompt: placeholder {{{name}}} is not a field name",
                              hint="placeholders are {field}; write {{ and }} for literal braces")
    return names
