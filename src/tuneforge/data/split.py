"""Train/validation/test splits: random, stratified, grouped, by time.

Every strategy is deterministic for a given seed and input order, returns sorted index lists per
split, and never drops a row silently: rows lacking the field a strategy needs are an error that
names their source lines.
"""
from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from tuneforge.atomic import write_chunks_atomic
from tuneforge.data.text import format_lines, resolve_lines
from tuneforge.errors import DataError
from tuneforge.hashing import sha256_file

Strategy = Literal["random", "stratified", "grouped", "time"]
_MISSING = object()


@dataclass(frozen=True)
class SplitResult:
    strategy: str
    seed: int
    ratios: dict[str, float]
    indices: dict[str, list[int]]
    field: str | None = None
    # Strategy-specific facts the manifest must carry (time: how boundaries moved to keep timestamp ties together).
    notes: dict[str, Any] | None = None


def _check_ratios(ratios: Mapping[str, float]) -> dict[str, float]:
    if not ratios:
        raise ValueError("ratios must name at least one split")
    if any(r < 0 for r in ratios.values()):
        raise ValueError(f"ratios must be non-negative, got {dict(ratios)}")
    total = sum(ratios.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"ratios must sum to 1, got {total:g} from {dict(ratios)}")
    return dict(ratios)


def allocate(total: int, ratios: Mapping[str, float]) -> dict[str, int]:
    """Integer counts summing exactly to `total` (largest remainder; ties to the earlier split)."""
    exact = {k: total * r for k, r in ratios.items()}
    counts = {k: int(v) for k, v in exact.items()}
    left = total - sum(counts.values())
    by_remainder = sorted(ratios, key=lambda k: (-(exact[k] - counts[k]), list(ratios).index(k)))
    for k in by_remainder[:left]:
        counts[k] += 1
    return counts


def get_field(row: Mapping[str, Any], path: str) -> Any:
    """Dotted lookup ("meta.source"); returns _MISSING when any step is absent or None."""
    value: Any = row
    for part in path.split("."):
        if not isinstance(value, Mapping) or value.get(part) is None:
            return _MISSING
        value = value[part]
    return value


def resolve_field(rows: Sequence[Mapping[str, Any]], field: str, purpose: str) -> str:
    """The dotted path under which rows carry `field`: as given, else under `meta` (a row's extra fields live
    there after normalisation, so `category` and `meta.category` name the same thing). Every command that takes a
    field name (split --field, audit --label-field) resolves it here, so they agree on what exists.

    Raises DataError naming the field and the fields the rows do have when no row has it.
    """
    candidates = [field] if field.startswith("meta.") else [field, "meta." + field]
    for candidate in candidates:
        if any(get_field(r, candidate) is not _MISSING for r in rows):
            return candidate
    present: set[str] = set()
    for r in rows:
        present.update(k for k in r if k != "meta")
        if isinstance(r.get("meta"), Mapping):
            present.update(f"meta.{k}" for k in r["meta"])
    shown = sorted(present)
    listed = ", ".join(shown[:40]) + (f" ... ({len(shown) - 40} more)" if len(shown) > 40 else "")
    raise DataError(f"no row has the field {field!r} ({purpose})",
                    hint=f"fields found in the rows: {listed or 'none'}")


def _field_values(
    rows: Sequence[Mapping[str, Any]], field: str, lines: Sequence[int], strategy: str
) -> list[Any]:
    values = [get_field(r, field) for r in rows]
    missing = [lines[i] for i, v in enumerate(values) if v is _MISSING]
    if missing:
        raise DataError(
            f"{len(missing)} row(s) lack the field {field!r} needed by the {strategy} split "
            f"(lines {format_lines(missing)})",
            hint=f"add {field!r} to those rows, or drop them before splitting",
        )
    return values


def _hashable(value: Any) -> Any:
    # Lists/dicts as field values are compared by their JSON form so they can key a dict.
    return value if isinstance(value, (str, int, float, bool)) else json.dumps(value, sort_keys=True)


def _cut(order: Sequence[int], counts: Mapping[str, int]) -> dict[str, list[int]]:
    out, pos = {}, 0
    for name, k in counts.items():
        out[name] = sorted(order[pos : pos + k])
        pos += k
    return out


def split_random(n_rows: int, ratios: Mapping[str, float], seed: int = 0) -> dict[str, list[int]]:
    order = list(range(n_rows))
    random.Random(seed).shuffle(order)
    return _cut(order, allocate(n_rows, _check_ratios(ratios)))


def split_stratified(
    values: Sequence[Any], ratios: Mapping[str, float], seed: int = 0
) -> dict[str, list[int]]:
    """Each stratum is split by the ratios on its own, so every split sees each label in the same
    proportion (up to rounding within a stratum)."""
    ratios = _check_ratios(ratios)
    strata: dict[Any, list[int]] = {}
    for i, v in enumerate(values):
        strata.setdefault(_hashable(v), []).append(i)
    rng = random.Random(seed)
    out: dict[str, list[int]] = {k: [] for k in ratios}
    # Strata are visited in first-seen order so the rng stream (hence the result) is reproducible.
    for members in strata.values():
        rng.shuffle(members)
        for name, part in _cut(members, allocate(len(members), ratios)).items():
            out[name].extend(part)
    return {k: sorted(v) for k, v in out.items()}


def split_grouped(
    values: Sequence[Any], ratios: Mapping[str, float], seed: int = 0
) -> dict[str, list[int]]:
    """Whole groups go to one split (no user, document or conversation straddles train and test).
    Groups are shuffled, then laid end to end; a group goes to the split whose row range holds the
    group's midpoint, so split sizes track the ratios as closely as group sizes allow."""
    ratios = _check_ratios(ratios)
    groups: dict[Any, list[int]] = {}
    for i, v in enumerate(values):
        groups.setdefault(_hashable(v), []).append(i)
    members = list(groups.values())
    random.Random(seed).shuffle(members)
    bounds, acc = [], 0.0
    for name, r in ratios.items():
        acc += r * len(values)
        bounds.append((acc, name))
    out: dict[str, list[int]] = {k: [] for k in ratios}
    pos = 0
    for group in members:
        mid = pos + len(group) / 2
        name = next((nm for b, nm in bounds if mid < b), bounds[-1][1])
        out[name].extend(group)
        pos += len(group)
    return {k: sorted(v) for k, v in out.items()}


def parse_time(value: Any) -> datetime:
    """ISO 8601 date or datetime; a trailing 'Z' is UTC, and naive values are taken as UTC so that
    a file mixing both still orders (Python refuses to compare naive with aware datetimes)."""
    if not isinstance(value, str):
        raise ValueError(f"not an ISO date string: {value!r}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def split_by_time(
    values: Sequence[Any], ratios: Mapping[str, float], lines: Sequence[int] | None = None
) -> dict[str, list[int]]:
    """Oldest rows to the first split (train), newest to the last (test), in the ratios' order; rows with the
    same timestamp always land in the same split (see `_time_split`). No seed is involved."""
    return _time_split(values, ratios, lines)[0]


def _time_split(
    values: Sequence[Any], ratios: Mapping[str, float], lines: Sequence[int] | None = None
) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """(indices, ties note). A boundary that falls inside a group of equal timestamps moves to the end of the
    group: a row dated the same instant as a test row is not "before" it, so putting one in train and the other in
    test would leak the test period into training. The note records every move for the manifest."""
    ratios = _check_ratios(ratios)
    lines = resolve_lines(len(values), lines)
    stamps, bad = [], []
    for i, v in enumerate(values):
        try:
            stamps.append(parse_time(v))
        except (ValueError, TypeError):
            bad.append(lines[i])
    if bad:
        raise DataError(
            f"{len(bad)} row(s) have a time value that is not an ISO 8601 date (lines {format_lines(bad)})",
            hint="use e.g. 2024-05-01 or 2024-05-01T12:00:00Z",
        )
    order = sorted(range(len(values)), key=lambda i: stamps[i])
    requested = allocate(len(values), ratios)
    names = list(requested)
    counts: dict[str, int] = {}
    moved: list[dict[str, Any]] = []
    start = pos = cumulative = 0
    for k, name in enumerate(names):
        # Each boundary aims at its requested cumulative position, so one moved boundary does not shift the next.
        cumulative += requested[name]
        target = max(pos, cumulative) if k < len(names) - 1 else len(order)
        pos = target
        while 0 < pos < len(order) and stamps[order[pos - 1]] == stamps[order[pos]]:
            pos += 1
        if pos != target:
            moved.append({"boundary": f"{name}|{names[k + 1]}", "timestamp": stamps[order[target]].isoformat(),
                          "rows_moved": pos - target, "into": name})
        counts[name] = pos - start
        start = pos
    note = {"policy": "rows with the same timestamp stay in one split: a boundary inside a group of equal "
                      "timestamps moves to the end of that group",
            "requested_rows": requested, "moved": moved}
    return _cut(order, counts), note


def split_rows(
    rows: Sequence[Mapping[str, Any]],
    line_numbers: Sequence[int] | None = None,
    *,
    strategy: Strategy = "random",
    ratios: Mapping[str, float] | None = None,
    seed: int = 0,
    field: str | None = None,
) -> SplitResult:
    """Split normalised rows; `field` (dotted path, e.g. "meta.user_id") is required by the
    stratified, grouped and time strategies."""
    ratios = _check_ratios(ratios or {"train": 0.8, "validation": 0.1, "test": 0.1})
    lines = resolve_lines(len(rows), line_numbers)
    notes = None
    if strategy == "random":
        indices = split_random(len(rows), ratios, seed)
    elif strategy in ("stratified", "grouped", "time"):
        if not field:
            raise ValueError(f"the {strategy} split needs a field")
        values = _field_values(rows, field, lines, strategy)
        if strategy == "stratified":
            indices = split_stratified(values, ratios, seed)
        elif strategy == "grouped":
            indices = split_grouped(values, ratios, seed)
        else:
            indices, ties = _time_split(values, ratios, lines)
            notes = {"time_ties": ties}
    else:
        raise ValueError(f"unknown split strategy {strategy!r}")
    return SplitResult(strategy=strategy, seed=seed, ratios=ratios, indices=indices, field=field, notes=notes)


# --- writing --------------------------------------------------------------------------------------



def _jsonl_line(row: Mapping[str, Any]) -> bytes:
    return (json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")


_MANIFEST_KEYS = {"seed", "strategy", "ratios", "field", "source_sha256", "time_ties"}


def write_splits(
    rows: Sequence[Mapping[str, Any]],
    result: SplitResult,
    out_dir: str | Path,
    *,
    source_path: str | Path | None = None,
    manifest_name: str = "split_manifest.json",
) -> dict[str, Any]:
    """Write `<out_dir>/<split>.jsonl` per split and the manifest; returns the manifest:
    {split: {"path", "rows", "sha256"}, "seed", "strategy", "ratios", "field", "source_sha256"}, plus
    "time_ties" for the time strategy (requested rows per split and every boundary moved to keep ties together).
    `source_sha256` hashes the source file when given, else the rows as written (JSONL)."""
    clash = set(result.indices) & _MANIFEST_KEYS
    if clash:
        raise ValueError(f"split names {sorted(clash)} collide with manifest keys; rename the splits")
    out_dir = Path(out_dir)
    manifest: dict[str, Any] = {}
    for name, idx in result.indices.items():
        path = out_dir / f"{name}.jsonl"
        sha = write_chunks_atomic(path, (_jsonl_line(rows[i]) for i in idx))
        manifest[name] = {"path": str(path), "rows": len(idx), "sha256": sha}
    if source_path is not None:
        source_sha = sha256_file(Path(source_path))
    else:
        h = hashlib.sha256()
        for row in rows:
            h.update(_jsonl_line(row))
        source_sha = h.hexdigest()
    manifest.update(
        seed=result.seed,
        strategy=result.strategy,
        ratios=result.ratios,
        field=result.field,
        source_sha256=source_sha,
    )
    manifest.update(result.notes or {})
    write_chunks_atomic(out_dir / manifest_name, [json.dumps(manifest, indent=2).encode("utf-8") + b"\n"])
    return manifest
