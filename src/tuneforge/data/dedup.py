"""Duplicate, near-duplicate and conflicting examples.

All results carry row indices (positions in the `rows` list) and source line numbers, so a report
can point a user at the file and `clean` can drop rows by index.

Near duplicates use datasketch MinHash signatures and datasketch's choice of LSH banding; the
banding itself runs vectorised over the signature matrix (see `_candidate_pairs` for why), and every
candidate pair is verified. Shingles default to word 5-grams: chat rows run to
hundreds of words, where word 5-grams give ~one shingle per word (vs ~one per character for char
n-grams: 5-7x more hashing for the same decision) and track the reuse of phrasing that
near-duplicate training data consists of. Char n-grams (`shingle="char"`) are available for short
rows, where one edited word would change most of the few word 5-grams a row has.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from datasketch import MinHash, MinHashLSH

from tuneforge.data.text import (
    batch_ngram_hashes,
    batch_word_hashes,
    char_ngram_hashes,
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
    """Rows linked by verified near-duplicate pairs. `representative` is the first row (kept by
    `clean`); `similarity` is the lowest estimated Jaccard over the verified pairs that formed it."""

    representative: int
    representative_line: int
    members: list[int]
    lines: list[int]
    similarity: float


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


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:  # path compression keeps later finds O(~1)
            parent[x], x = root, parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        # Register both ends so that iterating `parent` enumerates every clustered row.
        self.parent.setdefault(a, a)
        self.parent.setdefault(b, b)
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # The smaller index becomes the root, so a cluster's root is its representative.
            lo, hi = (ra, rb) if ra < rb else (rb, ra)
            self.parent[hi] = lo


_CHUNK = 512


def _shingles(texts: list[str], shingle: str, ngram: int) -> list[np.ndarray]:
    """32-bit shingle hashes per text (datasketch's affine32 scheme takes 32-bit inputs; the top
    half of a 64-bit hash is as uniform as any 32 bits of it). Duplicates are harmless: a minimum
    is unchanged by repeats."""
    if shingle == "word":
        hashes, offsets = batch_word_hashes(texts)
        grams, goffs = batch_ngram_hashes(hashes, offsets, ngram)
        top = (grams >> np.uint64(32)).astype(np.uint32)
        return [top[goffs[k] : goffs[k + 1]] for k in range(len(texts))]
    return [(char_ngram_hashes(t, ngram) >> np.uint64(32)).astype(np.uint32) for t in texts]


def near_duplicates(
    rows: Sequence[Mapping[str, Any]],
    line_numbers: Sequence[int] | None = None,
    *,
    on: ViewName = "full",
    threshold: float = 0.8,
    num_perm: int = 128,
    shingle: Literal["word", "char"] = "word",
    ngram: int = 5,
    seed: int = 1,
    ignore: Iterable[int] = (),
    progress: bool = False,
) -> list[NearDuplicateCluster]:
    """Clusters of rows whose estimated Jaccard similarity (over shingles of the normalised `on`
    view) is >= `threshold`.

    Candidate pairs come from LSH banding; each is verified against the MinHash estimate, since
    banding alone lets through pairs well below the threshold. Clusters are the connected
    components of verified pairs, so a chain A~B~C is one cluster even if A and C are further
    apart. Rows in `ignore` (e.g. the extra copies of exact duplicates) take no part.
    Deterministic: stable hashes and a fixed permutation `seed`.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError("threshold must be in (0, 1]")
    if shingle not in ("word", "char"):
        raise ValueError("shingle must be 'word' or 'char'")
    lines = resolve_lines(len(rows), line_numbers)
    skip = set(ignore)
    # datasketch picks the banding (b bands of r rows) for the threshold. Candidates are verified
    # afterwards, so a false positive costs one signature comparison while a false negative is a
    # missed duplicate: the weights favour recall (num_perm=128, threshold 0.8 -> 14 bands of 9:
    # 97% recall at Jaccard 0.85 where the default weights give 69%).
    params = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.1, 0.9))
    bands, band_rows = params.b, params.r
    template = MinHash(num_perm=num_perm, seed=seed)
    minhash = _MinHasher(num_perm, seed, template.permutations, template.scheme)
    # Signatures are kept as one uint32 matrix (num_perm * 4 bytes per row: 51 MB for 100k rows at
    # 128) for the verification step; shingles and MinHash objects are dropped per row.
    signatures = np.zeros((len(rows), num_perm), dtype=np.uint32)
    present = np.zeros(len(rows), dtype=bool)
    numbered = progress_iter(enumerate(rows), total=len(rows), description="near duplicates",
                             enabled=progress)
    for chunk in chunked(((i, r) for i, r in numbered if i not in skip), _CHUNK):
        texts = [normalize(view(row, on)) for _, row in chunk]
        for (i, _), hashes in zip(chunk, _shingles(texts, shingle, ngram)):
            if hashes.size:  # an empty text is similar to nothing; exact dedup handles empties
                signatures[i] = minhash(hashes).hashvalues
                present[i] = True

    uf = _UnionFind()
    edges: list[tuple[int, float]] = []  # (row, similarity) per verified pair, keyed by one end
    ids = np.flatnonzero(present)
    pairs = _candidate_pairs(signatures[ids], bands, band_rows)
    for lo in range(0, len(pairs), 1 << 16):  # bounded temporaries on pathological inputs
        a, b = ids[pairs[lo : lo + (1 << 16), 0]], ids[pairs[lo : lo + (1 << 16), 1]]
        sims = (signatures[a] == signatures[b]).mean(axis=1)
        for i, j, sim in zip(a.tolist(), b.tolist(), sims.tolist()):
            if sim >= threshold:
                uf.union(i, j)
                edges.append((i, sim))

    members: dict[int, list[int]] = defaultdict(list)
    for x in list(uf.parent):
        members[uf.find(x)].append(x)
    min_sim: dict[int, float] = {}
    for i, sim in edges:
        root = uf.find(i)
        min_sim[root] = min(min_sim.get(root, 1.0), sim)
    clusters = []
    for root in sorted(members):
        group = sorted(members[root])
        clusters.append(
            NearDuplicateCluster(
                representative=group[0],
                representative_line=lines[group[0]],
                members=group,
                lines=[lines[i] for i in group],
                similarity=round(min_sim.get(root, 1.0), 4),
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
        for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
            members = np.sort(order[start : start + size])
            if size <= _MAX_BUCKET_PAIRS:
                i, j = np.triu_indices(size, 1)
            else:
                # A huge bucket (thousands of near-identical templated rows) would yield size^2
                # pairs; linking each member to its predecessor and to the first keeps the
                # bucket connected in union-find at linear cost.
                i = np.r_[np.zeros(size - 1, dtype=np.int64), np.arange(size - 1)]
                j = np.r_[np.arange(1, size), np.arange(1, size)]
            found.append(np.stack((members[i], members[j]), axis=1))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.concatenate(found)
    return np.unique(pairs, axis=0)


_MAX_BUCKET_PAIRS = 64


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
        self.args = dict(num_perm=num_perm, seed=seed, hashfunc=_identity, permutations=perms,
                         scheme=scheme)
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
    shingle: Literal["word", "char"] = "word",
    ngram: int = 5,
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
        rows, line_numbers, on=on, threshold=threshold, num_perm=num_perm, shingle=shingle,
        ngram=ngram, seed=seed, ignore=extra_copies, progress=progress,
    )
    return DedupReport(
        exact=exact,
        near=near,
        conflicts=conflicts(rows, line_numbers, ignore_punctuation=ignore_punctuation, progress=progress),
    )
