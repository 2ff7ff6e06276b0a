"""Class balance by cohort, a section of `tuneforge data audit`: how the labels are spread within each cohort.

A cohort comes from a field of the rows (`--cohort-field gender`) or, without one, from the terms of the swap
list each row uses (tuneforge.data.fairness.swaps.detect_cohorts: `male`, `female`, `both`, `none` per group).
A label whose share differs much between cohorts is a bias a model will learn; `label_share_gap` is, per label,
the largest difference in its share between two cohorts (rows of `both`/`none` left out of the gap).
"""
from __future__ import annotations

import json
from typing import Any

_NOT_A_COHORT = ("both", "none", "(missing)")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _table(cohort_of: list[str], labels: list[str | None]) -> dict:
    cohorts: dict[str, dict] = {}
    for cohort, label in zip(cohort_of, labels):
        entry = cohorts.setdefault(cohort, {"rows": 0, "labels": {}})
        entry["rows"] += 1
        if label is not None:
            entry["labels"][label] = entry["labels"].get(label, 0) + 1
    for entry in cohorts.values():
        total = sum(entry["labels"].values())
        entry["labels"] = dict(sorted(entry["labels"].items(), key=lambda kv: (-kv[1], kv[0])))
        entry["shares"] = {k: round(v / total, 4) for k, v in entry["labels"].items()} if total else {}
    real = [c for c in cohorts if c not in _NOT_A_COHORT]
    all_labels = sorted({lab for lab in labels if lab is not None})
    gap = {}
    if len(real) >= 2:
        for label in all_labels:
            shares = [cohorts[c]["shares"].get(label, 0.0) for c in real if cohorts[c]["shares"]]
            if len(shares) >= 2:
                gap[label] = round(max(shares) - min(shares), 4)
    ordered = dict(sorted(cohorts.items(), key=lambda kv: (kv[0] in _NOT_A_COHORT, -kv[1]["rows"], kv[0])))
    return {"cohorts": ordered, "label_share_gap": gap}


def cohort_balance(loaded, label_field: str | None, *, cohort_field: str | None = None, swaps=None) -> dict:
    """{"source", "label_field", "groups": {group: {"cohorts": {cohort: {rows, labels, shares}}, "label_share_gap"}}}.

    `label_field` is an already resolved dotted path (None: rows per cohort only); `cohort_field` a field name
    (resolved like --label-field); else `swaps` (a SwapList, default the shipped one) detects cohorts from terms.
    """
    from tuneforge.data.split import _MISSING, get_field, resolve_field

    labels: list[str | None] = []
    for row in loaded.rows:
        value = get_field(row, label_field) if label_field else _MISSING
        labels.append(None if value is _MISSING else _text(value))
    if cohort_field:
        path = resolve_field(loaded.rows, cohort_field, "--cohort-field of the audit")
        values = [get_field(row, path) for row in loaded.rows]
        cohort_of = ["(missing)" if v is _MISSING else _text(v) for v in values]
        return {"source": f"field {path}", "label_field": label_field, "groups": {path: _table(cohort_of, labels)}}
    from tuneforge.data.fairness.swaps import detect_cohorts, load_swaps

    swaps = swaps or load_swaps()
    detected = [detect_cohorts(row, swaps) for row in loaded.rows]
    return {"source": f"terms of {swaps.source}", "label_field": label_field,
            "groups": {g: _table([d[g] for d in detected], labels) for g in swaps.groups}}
