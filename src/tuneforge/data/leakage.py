"""Train/eval leakage: rows of an evaluation split (validation, test, an extra eval file) that also
occur - verbatim or in long shared passages - in training data.

Splits are compared in the order given, training split first: each split is checked against every
split before it (train<->validation, train<->test, validation<->test, ... <->extra eval file).

Exact overlap: identical normalised prompt (or full text). N-gram overlap: the share of an eval
item's distinct word n-grams (default 13, lowercased whitespace tokens - the contamination test
popularised by GPT-3's report) found in one reference row; a pair that is already an exact pair is
not listed again as an n-gram pair.

Speed and memory: the n-grams of the evaluation side are hashed once into a sorted array (eval sets
are small: 1k items ~ 200k n-grams), and the training rows are streamed past it with a vectorised
lookup per row. Indexing the training side instead would hold ~20M n-gram hashes for 100k rows of
300 tokens (>1 GB as a Python set) for the same answer.

Boilerplate: an n-gram found in more than `max_ngram_df` training rows (a shared system prompt, a
licence header) says nothing about one eval item; such n-grams are ignored for pairs and counted
in the report, otherwise one system prompt would pair every eval item with every training row.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from tuneforge.data.text import (
    batch_ngram_hashes,
    batch_word_hashes,
    chunked,
    normalize,
    progress_iter,
    resolve_lines,
    view,
)


@dataclass(frozen=True)
class LeakPair:
    """One offending pair. `ref_*` is the earlier split (train, unless two eval splits collide),
    `eval_*` the later one. `share` is the fraction of the eval item's n-grams found in the
    reference row (1.0 for exact overlap)."""

    kind: Literal["exact", "ngram"]
    ref_split: str
    ref_index: int
    ref_line: int
    eval_split: str
    eval_index: int
    eval_line: int
    share: float


@dataclass
class LeakageReport:
    n: int
    exact_on: str
    exact: list[LeakPair] = field(default_factory=list)
    ngram: list[LeakPair] = field(default_factory=list)
    # Per eval split: number of its items involved in at least one pair (exact or n-gram).
    leaked_items: dict[str, int] = field(default_factory=dict)
    boilerplate_ngrams: int = 0

    @property
    def pairs(self) -> list[LeakPair]:
        return self.exact + self.ngram


def _exact_key(row: Mapping[str, Any], exact_on: str) -> bytes | None:
    text = view(row, exact_on)
    if exact_on == "prompt" and not text.strip():
        text = view(row, "full")  # plain-text rows have no prompt; compare their whole text
    text = normalize(text)
    if not text:
        return None
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


_CHUNK = 512


def _chunk_ngrams(rows: Sequence[Mapping[str, Any]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Word n-gram hashes of the lowercased full text of each row, as (hashes, offsets).
    Rows shorter than n contribute none: a 5-word item sharing a 5-word phrase is not evidence of
    contamination at the n chosen; exact overlap covers short items."""
    hashes, offsets = batch_word_hashes([view(r, "full").lower() for r in rows])
    return batch_ngram_hashes(hashes, offsets, n, short="skip")


class _EvalIndex:
    """Sorted unique n-gram hashes of all eval-side items, with a CSR map hash -> items."""

    def __init__(self, per_item: list[np.ndarray]) -> None:
        self.item_sizes = np.array([a.size for a in per_item], dtype=np.int64)
        if per_item:
            hashes = np.concatenate(per_item)
            items = np.repeat(np.arange(len(per_item), dtype=np.int64), self.item_sizes)
        else:
            hashes = np.empty(0, np.uint64)
            items = np.empty(0, np.int64)
        order = np.argsort(hashes, kind="stable")
        hashes, items = hashes[order], items[order]
        self.unique, starts = np.unique(hashes, return_index=True)
        self.indptr = np.append(starts, hashes.size).astype(np.int64)
        self.items = items
        # A direct-mapped presence table on the top hash bits rejects ~97% of training n-grams
        # with one gather; binary search over a 200k-entry array is cache-missing and 5x slower.
        bits = int(np.clip(np.ceil(np.log2(max(self.unique.size, 1) * 32)), 16, 26))
        self._shift = np.uint64(64 - bits)
        self._table = np.zeros(1 << bits, dtype=bool)
        self._table[(self.unique >> self._shift).astype(np.int64)] = True

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids into `unique`, positions in `hashes`) of the hashes that the index holds."""
        if self.unique.size == 0 or hashes.size == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        maybe = np.flatnonzero(self._table[(hashes >> self._shift).astype(np.int64)])
        pos = np.searchsorted(self.unique, hashes[maybe])
        pos[pos == self.unique.size] = 0
        found = self.unique[pos] == hashes[maybe]
        return pos[found], maybe[found]

    def items_of(self, ids: np.ndarray) -> np.ndarray:
        """Eval item per (id, item) incidence - one entry per item containing each id."""
        starts, ends = self.indptr[ids], self.indptr[ids + 1]
        lengths = ends - starts
        # Concatenate ranges [start, end) without a Python loop.
        offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
        return self.items[offsets + np.arange(lengths.sum())]


def find_leakage(
    splits: Mapping[str, Sequence[Mapping[str, Any]]],
    line_numbers: Mapping[str, Sequence[int]] | None = None,
    *,
    train: str = "train",
    n: int = 13,
    exact_on: Literal["prompt", "full"] = "prompt",
    min_share: float = 0.0,
    max_ngram_df: int | None = None,
    progress: bool = False,
) -> LeakageReport:
    """Exact and n-gram leakage between `splits` (name -> normalised rows).

    `line_numbers` maps split name -> source line per row (default: row i on line i + 1).
    N-gram pairs are reported when the shared share is > 0 and >= `min_share`.
    `max_ngram_df` defaults to max(50, 1% of training rows).
    """
    if train not in splits:
        raise ValueError(f"training split {train!r} not among splits {list(splits)}")
    if n < 1:
        raise ValueError("n must be >= 1")
    line_numbers = line_numbers or {}
    order = [train] + [s for s in splits if s != train]
    rank = {s: k for k, s in enumerate(order)}
    lines = {s: resolve_lines(len(splits[s]), line_numbers.get(s)) for s in order}
    report = LeakageReport(n=n, exact_on=exact_on)
    leaked: dict[str, set[int]] = {s: set() for s in order[1:]}

    # Exact: one dict of earlier rows; each split is looked up, then added.
    seen: dict[bytes, list[tuple[str, int]]] = {}
    for s in order:
        keys = [_exact_key(r, exact_on) for r in splits[s]]
        if s != train:
            for i, key in enumerate(keys):
                for ref, j in seen.get(key, ()) if key is not None else ():
                    if ref != s:
                        report.exact.append(
                            LeakPair("exact", ref, j, lines[ref][j], s, i, lines[s][i], 1.0)
                        )
                        leaked[s].add(i)
        for i, key in enumerate(keys):
            if key is not None:
                seen.setdefault(key, []).append((s, i))
    del seen

    # N-gram: index eval-side items (global id = position in `eval_items`).
    eval_items: list[tuple[str, int]] = []
    per_item: list[np.ndarray] = []
    for s in order[1:]:
        for start in range(0, len(splits[s]), _CHUNK):
            part = splits[s][start : start + _CHUNK]
            grams, offs = _chunk_ngrams(part, n)
            for k in range(len(part)):
                eval_items.append((s, start + k))
                per_item.append(np.unique(grams[offs[k] : offs[k + 1]]))
    index = _EvalIndex(per_item)
    item_rank = np.array([rank[s] for s, _ in eval_items], dtype=np.int64)
    del per_item

    # Stream every split past the index, a chunk of rows per vectorised lookup; keep only rows
    # that hit something (few, unless the data is contaminated).
    n_train = len(splits[train])
    df = np.zeros(index.unique.size, dtype=np.int64)
    hits: list[tuple[str, int, np.ndarray]] = []
    total = sum(len(splits[s]) for s in order)
    streamed = ((s, i, row) for s in order for i, row in enumerate(splits[s]))
    tracked = progress_iter(streamed, total=total, description="n-gram leakage", enabled=progress)
    for chunk in chunked(tracked, _CHUNK):
        grams, offs = _chunk_ngrams([row for _, _, row in chunk], n)
        ids, positions = index.lookup(grams)
        if ids.size == 0:
            continue
        owner = np.searchsorted(offs, positions, side="right") - 1  # chunk row of each hit
        for k in np.unique(owner).tolist():
            s, i, _ = chunk[k]
            row_ids = np.unique(ids[owner == k])
            hits.append((s, i, row_ids))
            if s == train:
                df[row_ids] += 1  # unique per row, so plain fancy-index add is exact

    # A pair already reported as exact is not counted again as an n-gram pair: one leak, one pair.
    exact_pairs = {(p.ref_split, p.ref_index, p.eval_split, p.eval_index) for p in report.exact}
    limit = max_ngram_df if max_ngram_df is not None else max(50, n_train // 100)
    boilerplate = df > limit
    report.boilerplate_ngrams = int(boilerplate.sum())
    for s, i, ids in hits:
        ids = ids[~boilerplate[ids]]
        if ids.size == 0:
            continue
        items = index.items_of(ids)
        items = items[item_rank[items] > rank[s]]  # only later splits are "eval" for this row
        if items.size == 0:
            continue
        uniq, counts = np.unique(items, return_counts=True)
        for item, count in zip(uniq.tolist(), counts.tolist()):
            share = count / index.item_sizes[item]
            es, ei = eval_items[item]
            if share >= min_share and (s, i, es, ei) not in exact_pairs:
                report.ngram.append(
                    LeakPair("ngram", s, i, lines[s][i], es, ei, lines[es][ei], round(float(share), 4))
                )
                leaked[es].add(ei)
    report.ngram.sort(key=lambda p: (rank[p.eval_split], p.eval_index, rank[p.ref_split], p.ref_index))
    report.leaked_items = {s: len(v) for s, v in leaked.items()}
    return report
