"""Metrics per slice (a row field such as task or language), stored as `models.X.slices[NAME]` for gates.

A slice entry holds each metric's mean over the slice's items plus `item_count` (raw: the gates never rescale a
`_count`), so `exact_match >= 0.8 on de` reads the mean over items whose slice field is "de".
"""
from __future__ import annotations

from collections import defaultdict

#: Slice names the evaluator writes itself; a data slice with one of these names would be overwritten.
RESERVED = ("safety", "general")


def slice_summaries(per_item: list[dict], slice_of: dict[str, str | None], metrics: list[str]) -> dict[str, dict]:
    """{slice: {metric: mean, "item_count": n}} over items that have a slice (others are in no slice)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in per_item:
        name = slice_of.get(record["id"])
        if name is not None:
            groups[name].append(record)
    out = {}
    for name in sorted(groups):
        records = groups[name]
        entry = {m: sum(r["scores"][m] for r in records) / len(records) for m in metrics
                 if all(m in r["scores"] for r in records)}
        entry["item_count"] = len(records)
        out[name] = entry
    return out
