"""Weighted mixtures of several datasets, reproducibly.

Two ways to ask: weights plus a total ("60% chat, 40% code, 10k rows") or a target count per
source. Sampling is without replacement by default, and a source too small for its share is an
error rather than a silent shortfall - a mixture that is not what was asked for would invalidate
every comparison made with it. With `replacement=True` a source smaller than its quota is upsampled:
every row is repeated the same number of times and the remainder is sampled without replacement, so
no row is lost and repeat counts differ by at most one. A source with enough rows is still sampled
without replacement (drawing it independently would drop a third of its rows at a quota equal to its
size while repeating others).
"""
from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.data.split import allocate
from tuneforge.errors import DataError


@dataclass
class MixSource:
    """One input: `weight` (ratio mode) or `count` (count mode) - every source uses the same mode.
    `path` is recorded, and hashed for the manifest when `sha256` is not given."""

    name: str
    rows: Sequence[Mapping[str, Any]]
    weight: float | None = None
    count: int | None = None
    path: str | Path | None = None
    sha256: str | None = None


@dataclass
class MixResult:
    rows: list[dict[str, Any]]
    manifest: dict[str, Any]


def _rows_sha256(rows: Sequence[Mapping[str, Any]]) -> str:
    h = hashlib.sha256()
    for row in rows:
        h.update((json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
    return h.hexdigest()


def _source_sha256(src: MixSource) -> str:
    if src.sha256:
        return src.sha256
    if src.path is not None and Path(src.path).is_file():
        h = hashlib.sha256()
        with open(src.path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    return _rows_sha256(src.rows)


def _targets(sources: Sequence[MixSource], total: int | None) -> tuple[str, dict[str, int]]:
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"source names must be unique, got {names}")
    by_weight = [s.weight is not None for s in sources]
    by_count = [s.count is not None for s in sources]
    if all(by_count) and not any(by_weight):
        if total is not None:
            raise ValueError("give either per-source counts or weights with a total, not both")
        if any(s.count < 0 for s in sources):  # type: ignore[operator]
            raise ValueError("counts must be non-negative")
        return "count", {s.name: int(s.count) for s in sources}  # type: ignore[arg-type]
    if all(by_weight) and not any(by_count):
        if total is None or total < 0:
            raise ValueError("ratio mode needs a non-negative total")
        weights = {s.name: float(s.weight) for s in sources}  # type: ignore[arg-type]
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"weights must be non-negative with a positive sum, got {weights}")
        # Weights need not sum to 1 ("3:1" is fine); they are normalised here.
        norm = sum(weights.values())
        return "ratio", allocate(total, {k: w / norm for k, w in weights.items()})
    raise ValueError("every source needs a weight (ratio mode) or every source a count (count mode)")


def mix_datasets(
    sources: Sequence[MixSource],
    *,
    total: int | None = None,
    seed: int = 0,
    replacement: bool = False,
    shuffle: bool = True,
) -> MixResult:
    """Sample each source to its target and interleave. Each output row is a copy whose `meta`
    gains `source` (name) and `source_index` (row position in that source)."""
    if not sources:
        raise ValueError("no sources to mix")
    mode, targets = _targets(sources, total)
    too_small = [
        f"{s.name} has {len(s.rows)} rows, {targets[s.name]} requested"
        for s in sources
        if targets[s.name] > len(s.rows) and (not replacement or not s.rows)
    ]
    if too_small:
        raise DataError(
            "source too small for the requested mixture: " + "; ".join(too_small),
            hint="lower its weight/count or the total, or allow sampling with replacement",
        )
    # One rng per source, seeded from (seed, name): adding or reordering sources does not change
    # what any other source contributes.
    out: list[dict[str, Any]] = []
    stats = []
    norm = sum(s.weight or 0.0 for s in sources)
    for s in sources:
        rng = random.Random(f"{seed}:{s.name}")
        k = targets[s.name]
        n = len(s.rows)
        if k > n:  # only reachable with replacement (checked above)
            repeats, rest = divmod(k, n)
            picks = [i for _ in range(repeats) for i in range(n)] + rng.sample(range(n), rest)
            sampling = "upsampled"
        else:
            picks = rng.sample(range(n), k)
            sampling = "without_replacement"
        for i in picks:
            row = dict(s.rows[i])
            row["meta"] = {**(row.get("meta") or {}), "source": s.name, "source_index": i}
            out.append(row)
        stats.append(
            {
                "name": s.name,
                "path": None if s.path is None else str(s.path),
                "sha256": _source_sha256(s),
                "rows_available": len(s.rows),
                "weight": s.weight,
                "requested": (s.weight / norm * total) if mode == "ratio" else k,  # type: ignore[operator]
                "actual": len(picks),
                "unique": len(set(picks)),
                "sampling": sampling,
            }
        )
    if shuffle:
        random.Random(seed).shuffle(out)
    n_out = len(out)
    for st in stats:
        st["actual_share"] = round(st["actual"] / n_out, 6) if n_out else 0.0
    manifest = {
        "mode": mode,
        "total": n_out,
        "seed": seed,
        "replacement": replacement,
        "sources": stats,
        "sha256": _rows_sha256(out),
    }
    return MixResult(rows=out, manifest=manifest)
