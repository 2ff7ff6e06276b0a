"""Duplicate, near-duplicate and conflicting examples.

All results carry row indices (positions in the `rows` list) and source line numbers, so a report
can point a user at the file and `clean` can drop rows by index.

Near duplicates: two rows are near duplicates when their similarity - the larger of
  * the share of words that line up: 1 - word-level edit distance / the longer row's word count, and
  * the Jaccard similarity of their word 5-gram sets (which survives reordered sentences or blocks;
    consulted when the rows share at least the threshold's share of their words, as reordering does)
is at least the threshold. "0.8" thus reads "at most one word in five differs". A set Jaccard over
shingles alone cannot say that for short rows: one changed word in a 13-word row removes 5 of its 9
word 5-grams (Jaccard 0.33), and even word unigrams give (13-2)/(13+2) = 0.73 for two changed words.
Edit distance counts the edits themselves, whatever the row's length.

Computing it for all pairs is quadratic, so candidates come first: datasketch MinHash signatures of
each row's multiset of words (each word tagged with its occurrence number), banded LSH (run vectorised
over the signature matrix, see `_candidate_pairs`), then every candidate pair is verified exactly
(`similarity`). k edits in an n-word row leave a multiset Jaccard of at least (n-k)/(n+k), so rows at
similarity t have word-multiset Jaccard >= t/(2-t); the banding is chosen for 0.9 of that bound, which
keeps a pair at the bound a candidate with probability >= 0.97 (t=0.8: 25 bands of 5); candidates
whose signatures estimate a Jaccard more than 0.15 below the bound (> 3 standard deviations) are
dropped before the exact check.
Scripts written without spaces (Chinese, Japanese) count each character as a word.
"""
from __future__ import annotations

import functools
import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from datasketch import MinHash, MinHashLSH

from tuneforge.data.text import (
    batch_word_hashes,
    chunked,
    normalize,
    progress_iter,
    resolve_lines,
    view,
)

ViewName = Literal["full", "prompt", "answer"]


@dataclass(frozen=True)
class DuplicateGroup:
    """Rows whose normalised text is identical. `indices[0]` is the one to keep."""

    indices: list[int]
    lines: list[int]


@dataclass(frozen=True)
class NearDuplicateCluster:
    """A representative (the first row, kept by `clean`) and the later rows that are near duplicates
    *of it*: each member's `similarity` to the representative is >= the threshold (`similarities`,
    aligned with `members`, 1.0 for the representative); `similarity` is the lowest of them."""

    representative: int
    representative_line: int
    members: list[int]
    lines: list[int]
    similarity: float
    similarities: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class ConflictGroup:
    """Rows asking the same (normalised) prompt but teaching different (normalised) answers."""

    indices: list[int]
    lines: list[int]
    distinct_answers: int


def _key(text: str, ignore_punctuation: bool) -> bytes:
    # A 16-byte digest instead of the text itself keeps memory flat on long rows; at 128 bits an
    # accidental collision across even billions of rows is not a practical concern.
    return hashlib.blake2b(
        normalize(text, ignore_punctuation=ignore_punctuation).encode("utf-8"), digest_size=16
    ).digest()


def exact_duplicates(
    rows: Sequence[Mapping[str, Any]],
    line_numbers: Sequence[int] | None = None,
    *,
    on: ViewName = "full",
    ignore_punctuation: bool = False,
    progress: bool = False,
) -> list[DuplicateGroup]:
    """Groups (size >= 2) of rows whose normalised `on` view is identical, ordered by first row."""
    lines = resolve_lines(len(rows), line_numbers)
    buckets: dict[bytes, list[int]] = {}
    items = progress_iter(rows, total=len(rows), description="exact duplicates", enabled=progress)
    for i, row in enumerate(items):
        buckets.setdefault(_key(view(row, on), ignore_punctuation), []).append(i)
    groups = [g for g in buckets.values() if len(g) > 1]
    groups.sort(key=lambda g: g[0])
    return [DuplicateGroup(g, [lines[i] for i in g]) for g in groups]


_CHUNK = 512
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
# Kana, CJK ideographs and Thai are written without spaces between words: each character is a word.
_NO_SPACE_SCRIPT = re.compile(r"([\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])")


def _prepared(text: str) -> str:
    text = normalize(text)
    return text if text.isascii() else _NO_SPACE_SCRIPT.sub(r" \1 ", text)


def words(text: str) -> list[str]:
    """The words near-duplicate similarity compares: the normalised text split on whitespace."""
    return _prepared(text).split()


def _multiset_shingles(texts: list[str]) -> list[np.ndarray]:
    """32-bit hashes of each prepared text's words, each tagged with its occurrence number ("the#0",
    "the#1"), so that MinHash estimates the multiset Jaccard that the edit-distance bound is about.
    (datasketch's affine32 scheme takes 32-bit inputs; the top half of a 64-bit hash is as uniform
    as any 32 bits.)"""
    hashes, offsets = batch_word_hashes(texts)
    if hashes.size:
        rows = np.repeat(np.arange(len(texts), dtype=np.uint64), np.diff(offsets))
        with np.errstate(over="ignore"):
            # One 64-bit key per (row, word); a collision between two pairs is a 2^-64 event.
            keys = hashes + rows * _GOLDEN
            order = np.argsort(keys)
            sorted_keys = keys[order]
            idx = np.arange(order.size)
            run_start = np.maximum.accumulate(np.where(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]], idx, 0))
            occurrence = np.empty(order.size, dtype=np.uint64)
            occurrence[order] = (idx - run_start).astype(np.uint64)
            hashes = hashes ^ (occurrence * _GOLDEN)
    top = (hashes >> np.uint64(32)).astype(np.uint32)
    return [top[offsets[k] : offsets[k + 1]] for k in range(len(texts))]


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance between two sequences of hashable items (words), by Myers' bit-parallel
    algorithm (Hyyro's formulation): one pass over `b` of a few big-integer operations on len(a)-bit
    vectors, so two 500-word rows cost ~1 ms in pure Python instead of 250k table cells."""
    if len(a) > len(b):
        a, b = b, a
    m = len(a)
    if m == 0:
        return len(b)
    peq: dict = {}
    for i, item in enumerate(a):
        peq[item] = peq.get(item, 0) | (1 << i)
    mask = (1 << m) - 1
    last = 1 << (m - 1)
    pv, mv, score = mask, 0, m
    for item in b:
        eq = peq.get(item, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | ~(xh | pv)
        mh = pv & xh
        if ph & last:
            score += 1
        elif mh & last:
            score -= 1
        ph = (ph << 1) | 1
        mh <<= 1
        pv = (mh | ~(xv | ph)) & mask
        mv = ph & xv & mask
    return score


def _ngram_set(tokens: list[str], n: int = 5) -> set:
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return set(zip(*(tokens[k:] for k in range(n))))


def similarity(a: list[str], b: list[str], threshold: float = 0.0) -> float:
    """Near-duplicate similarity of two word lists (see the module docstring). Below `threshold` the
    result is only guaranteed to be below it: a cheap upper bound skips the exact computation."""
    longer = max(len(a), len(b))
    if longer == 0:
        return 1.0
    if min(len(a), len(b)) / longer < threshold:
        return min(len(a), len(b)) / longer
    # Edit similarity <= the words the rows share (as multisets) / longer. The 5-gram Jaccard is
    # consulted only when that share reaches the threshold too: reordering keeps every word.
    shared = sum((Counter(a) & Counter(b)).values()) / longer
    if shared < threshold:
        return shared
    sim = 1.0 - edit_distance(a, b) / longer
    if sim < threshold or (threshold <= 0 and sim < 1):
        ga, gb = _ngram_set(a), _ngram_set(b)
        sim = max(sim, len(ga & gb) / len(ga | gb))
    return sim


def _boilerplate_filter(rows: Sequence[Mapping[str, Any]], skip: set[int]):
    """A function row -> row without its boilerplate: system messages found verbatim in more than one
    row. A 150-word system prompt shared by every row would otherwise make any two 200-word rows 75%
    identical; it says nothing about whether their conversations are copies."""
    seen: dict[bytes, int] = {}
    for i, row in enumerate(rows):
        if i not in skip:
            for m in row.get("messages") or ():
                if m.get("role") == "system":
                    key = _key(view({"messages": [m]}, "full"), False)
                    seen[key] = seen.get(key, 0) + 1
    shared = {k for k, n in seen.items() if n > 1}
    if not shared:
        return lambda row: row

    def strip(row: Mapping[str, Any]) -> Mapping[str, Any]:
        messages = row.get("messages")
        if not messages:
            return row
        kept = [m for m in messages
                if m.get("role") != "system" or _key(view({"messages": [m]}, "full"), False) not in shared]
        return row if len(kept) == len(messages) else {**row, "messages": kept}

    return strip


def near_duplicates(
    rows: Sequence[Mapping[str, Any]],
    line_numbers: Sequence[int] | None = None,
    *,
    on: ViewName = "full",
    threshold: float = 0.8,
    num_perm: int = 128,
    seed: int = 1,
    ignore: Iterable[int] = (),
    progress: bool = False,
) -> list[NearDuplicateCluster]:
    """Clusters of rows whose `similarity` (over the words of the normalised `on` view, system
    prompts shared by several rows left out) to the cluster's representative is >= `threshold`.

    Candidate pairs come from MinHash LSH; each is verified exactly. Clusters are built greedily in
    row order: a row not yet in a cluster becomes a representative and takes every later unclustered
    row verified similar to it. So every member is a near duplicate of the row kept in its place
    (no chains A~B~C that remove C for resembling B, which resembled A), and once a row is a member its
    own candidates need no checks. Rows in `ignore` (e.g. the extra copies of exact duplicates) take
    no part. Deterministic: stable hashes and a fixed permutation `seed`.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError("threshold must be in (0, 1]")
    lines = resolve_lines(len(rows), line_numbers)
    skip = set(ignore)
    strip = _boilerplate_filter(rows, skip)
    # datasketch picks the banding (b bands of r rows) for the candidate bound. A false positive
    # costs one exact check while a false negative is a missed duplicate: the weights favour recall.
    bound = threshold / (2.0 - threshold)
    params = MinHashLSH(threshold=0.9 * bound, num_perm=num_perm, weights=(0.1, 0.9))
    bands, band_rows = params.b, params.r
    template = MinHash(num_perm=num_perm, seed=seed)
    minhash = _MinHasher(num_perm, seed, template.permutations, template.scheme)
    # Signatures are one uint32 matrix (num_perm * 4 bytes per row: 51 MB for 100k rows at 128);
    # word lists are recomputed for the candidate rows rather than kept for every row.
    signatures = np.zeros((len(rows), num_perm), dtype=np.uint32)
    present = np.zeros(len(rows), dtype=bool)
    numbered = progress_iter(enumerate(rows), total=len(rows), description="near duplicates",
                             enabled=progress)
    for chunk in chunked(((i, r) for i, r in numbered if i not in skip), _CHUNK):
        texts = [_prepared(view(strip(row), on)) for _, row in chunk]
        for (i, _), hashes in zip(chunk, _multiset_shingles(texts)):
            if hashes.size:  # an empty text is similar to nothing; exact dedup handles empties
                signatures[i] = minhash(hashes).hashvalues
                present[i] = True

    @functools.lru_cache(maxsize=4096)
    def tokens(i: int) -> list[str]:
        return words(view(strip(rows[i]), on))

    ids = np.flatnonzero(present)
    pairs = ids[_candidate_pairs(signatures[ids], bands, band_rows)]  # sorted by (i, j), i < j
    # Most band collisions are background (rows sharing common words); the signatures' agreement
    # estimates the multiset Jaccard (sd <= 0.045 at 128 permutations) and drops pairs more than
    # 0.15 below the bound before any exact check.
    keep = np.zeros(len(pairs), dtype=bool)
    for lo in range(0, len(pairs), 1 << 16):  # bounded temporaries on pathological inputs
        a, b = pairs[lo : lo + (1 << 16), 0], pairs[lo : lo + (1 << 16), 1]
        keep[lo : lo + (1 << 16)] = (signatures[a] == signatures[b]).mean(axis=1) >= bound - 0.15
    pairs = pairs[keep]
    owner: dict[int, int] = {}  # member -> its representative
    members: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for i, j in pairs.tolist():
        if i in owner or j in owner:
            continue
        sim = similarity(tokens(i), tokens(j), threshold)
        if sim >= threshold:
            owner[j] = i
            members[i].append((j, sim))

    clusters = []
    for rep in sorted(members):
        group = [(rep, 1.0)] + sorted(members[rep])
        sims = [round(sim, 4) for _, sim in group]
        clusters.append(
            NearDuplicateCluster(
                representative=rep,
                representative_line=lines[rep],
                members=[i for i, _ in group],
                lines=[lines[i] for i, _ in group],
                similarity=min(sims),
                similarities=sims,
            )
        )
    return clusters


def _candidate_pairs(signatures: np.ndarray, bands: int, band_rows: int) -> np.ndarray:
    """LSH banding over a signature matrix: unique (i, j), i < j, positions sharing any band.

    The banding rule is the one datasketch's MinHashLSH applies, done on the whole matrix with
    numpy: MinHashLSH keeps a Python set per bucket and a bytes key per band and row (~4 KB per row,
    435 MB at 100k rows, and 60% of the near-dup time), this needs 8 bytes per band and row.
    """
    n = signatures.shape[0]
    if n < 2:
        return np.empty((0, 2), dtype=np.int64)
    found = []
    mult = _band_multipliers(band_rows)
    for k in range(bands):
        # One band at a time: a uint64 copy of the whole matrix would double its memory.
        block = signatures[:, k * band_rows : (k + 1) * band_rows].astype(np.uint64)
        with np.errstate(over="ignore"):
            keys = (block * mult).sum(axis=1, dtype=np.uint64)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        sizes = np.diff(np.r_[starts, n])
        # Buckets of two are most of them; numpy per-bucket calls would cost more than the banding.
        two = starts[sizes == 2]
        if two.size:
            found.append(np.sort(np.stack((order[two], order[two + 1]), axis=1), axis=1))
        for start, size in zip(starts[sizes > 2].tolist(), sizes[sizes > 2].tolist()):
            members = np.sort(order[start : start + size])
            if size <= _MAX_BUCKET_PAIRS:
                i, j = _triu(size)
            else:
                # A huge bucket (thousands of near-identical templated rows) would yield size^2
                # pairs; linking each member to its predecessor and to the first keeps the
                # bucket connected in union-find at linear cost.
                i = np.r_[np.zeros(size - 1, dtype=np.int64), np.arange(size - 1)]
                j = np.r_[np.arange(1, size), np.arange(1, size)]
            found.append(np.stack((members[i], members[j]), axis=1))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.concatenate(found).astype(np.int64)
    # One int64 key per pair: a 1-D unique is several times faster than np.unique(axis=0).
    keys = np.unique(pairs[:, 0] * n + pairs[:, 1])
    return np.stack((keys // n, keys % n), axis=1)


_MAX_BUCKET_PAIRS = 64


@functools.lru_cache(maxsize=_MAX_BUCKET_PAIRS + 1)
def _triu(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(size, 1)


def _band_multipliers(band_rows: int) -> np.ndarray:
    # Odd 64-bit multipliers: a band's key is an order-sensitive hash of its r values.
    rng = np.random.default_rng(band_rows)
    return rng.integers(1, 1 << 63, band_rows, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


class _MinHasher:
    """datasketch MinHash of a uint32 array of shingle hashes.

    `update_batch` calls the hash function once per element in Python (~0.3 us each). Passed as a
    one-element batch, the array reaches datasketch's vectorised permutation step whole; that is
    an unusual use of a public API, so it is checked once against the per-element path and
    abandoned (correct, just slower) if a datasketch release ever computes it differently.
    """

    def __init__(self, num_perm: int, seed: int, perms: np.ndarray, scheme: str) -> None:
        self.args = {"num_perm": num_perm, "seed": seed, "hashfunc": _identity, "permutations": perms,
                     "scheme": scheme}
        self.vectorised: bool | None = None

    def __call__(self, hashes: np.ndarray) -> MinHash:
        m = MinHash(**self.args)
        if self.vectorised is None:
            reference = MinHash(**self.args)
            reference.update_batch(hashes.tolist())
            try:
                m.update_batch([hashes])
                self.vectorised = bool(np.array_equal(m.hashvalues, reference.hashvalues))
            except (TypeError, ValueError):
                self.vectorised = False
            return m if self.vectorised else reference
        if self.vectorised:
            m.update_batch([hashes])
        else:
            m.update_batch(hashes.tolist())
        return m


def _identity(value):
    # Shingles are already stable 32-bit hashes; datasketch pre-mixes them (fmix32) itself.
    return value


def conflicts(
    rows: Sequence[Mapping[str, Any]],
    line_numbers: Sequence[int] | None = None,
    *,
    ignore_punctuation: bool = False,
    progress: bool = False,
) -> list[ConflictGroup]:
    """Groups of rows with the same normalised prompt and >= 2 distinct normalised answers.
    Rows without a prompt (plain text rows) cannot conflict and are skipped."""
    lines = resolve_lines(len(rows), line_numbers)
    by_prompt: dict[bytes, list[tuple[int, bytes]]] = {}
    items = progress_iter(rows, total=len(rows), description="conflicts", enabled=progress)
    for i, row in enumerate(items):
        prompt = view(row, "prompt")
        if not prompt.strip():
            continue
        answer_key = _key(view(row, "answer"), ignore_punctuation)
        by_prompt.setdefault(_key(prompt, ignore_punctuation), []).append((i, answer_key))
    groups = []
    for entries in by_prompt.values():
        distinct = len({a for _, a in entries})
        if distinct > 1:
            idx = [i for i, _ in entries]
            groups.append(ConflictGroup(idx, [lines[i] for i in idx], distinct))
    groups.sort(key=lambda g: g.indices[0])
    return groups


@dataclass
class DedupReport:
    exact: list[DuplicateGroup] = field(default_factory=list)
    near: list[NearDuplicateCluster] = field(default_factory=list)
    conflicts: list[ConflictGroup] = field(default_factory=list)

    def rows_to_drop(self) -> list[int]:
        """Every row except the first of each exact group and the representative of each near
        cluster: what `clean` removes. Conflicts are reported, never resolved automatically."""
        drop = {i for g in self.exact for i in g.indices[1:]}
        drop.update(i for c in self.near for i in c.members[1:])
        return sorted(drop)


def find_duplicates(
    rows: Sequence[Mapping[str, Any]],
    line_numbers: Sequence[int] | None = None,
    *,
    on: ViewName = "full",
    ignore_punctuation: bool = False,
    threshold: float = 0.8,
    num_perm: int = 128,
    seed: int = 1,
    progress: bool = False,
) -> DedupReport:
    """Exact groups, then near clusters over the rows that are not extra exact copies (so a planted
    copy is reported once, as exact), then conflicts."""
    exact = exact_duplicates(
        rows, line_numbers, on=on, ignore_punctuation=ignore_punctuation, progress=progress
    )
    extra_copies = [i for g in exact for i in g.indices[1:]]
    near = near_duplicates(
        rows, line_numbers, on=on, threshold=threshold, num_perm=num_perm, seed=seed,
        ignore=extra_copies, progress=progress,
    )
    return DedupReport(
        exact=exact,
        near=near,
        conflicts=conflicts(rows, line_numbers, ignore_punctuation=ignore_punctuation, progress=progress),
    )
