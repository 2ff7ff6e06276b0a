"""Inter-annotator agreement: Cohen's kappa (pairwise), Fleiss' kappa and Krippendorff's alpha (nominal).

    tuneforge data agreement ann1.jsonl ann2.jsonl ann3.jsonl --field label --id id --out adjudicate.jsonl

Cohen's kappa comes from scikit-learn. Fleiss' kappa and nominal Krippendorff's alpha are short closed forms
written here (statsmodels and `krippendorff` are not dependencies), checked in the tests against the textbook
examples: Fleiss' kappa = 0.210 on Fleiss (1971) / Wikipedia's 10 x 14 table, alpha = 0.743 on Krippendorff (2011)'s
nominal reliability data with missing values.

Rows are matched by id across files. A row absent from a file is reported (ids and files), never dropped silently:
Cohen's kappa for a pair uses the rows both annotators labelled, Fleiss' kappa the rows every annotator labelled
(it needs a fixed number of ratings per row), and Krippendorff's alpha every row with at least two labels.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.errors import DataError


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from an (items x categories) table of how many raters put item i in category j.

    Every row must sum to the same number of raters n >= 2. NaN when agreement by chance is total (one category).
    """
    counts = np.asarray(counts, dtype=float)
    raters = counts.sum(axis=1)
    if counts.ndim != 2 or counts.shape[0] == 0:
        raise ValueError("fleiss_kappa needs a non-empty items x categories table")
    n = raters[0]
    if n < 2 or not np.all(raters == n):
        raise ValueError("fleiss_kappa needs the same number (>= 2) of ratings for every item")
    shares = counts.sum(axis=0) / counts.sum()
    per_item = ((counts ** 2).sum(axis=1) - n) / (n * (n - 1))
    observed, chance = per_item.mean(), float((shares ** 2).sum())
    if math.isclose(chance, 1.0):
        return math.nan
    return float((observed - chance) / (1 - chance))


def krippendorff_alpha_nominal(units: list[list[Any]]) -> float:
    """Nominal Krippendorff's alpha; `units` holds, per unit (row), the values the raters gave (missing left out).

    Built on the coincidence matrix: each unit with m >= 2 values adds, for every ordered pair of its values from
    different raters, 1 / (m - 1). alpha = 1 - (n - 1) * disagreeing coincidences / sum over c != k of n_c * n_k.
    NaN when fewer than two values are pairable or every pairable value is the same category.
    """
    pairable = [list(u) for u in units if len(u) >= 2]
    categories = sorted({v for u in pairable for v in u}, key=str)
    index = {c: i for i, c in enumerate(categories)}
    coincidence = np.zeros((len(categories), len(categories)))
    for unit in pairable:
        m = len(unit)
        for a in range(m):
            for b in range(m):
                if a != b:
                    coincidence[index[unit[a]], index[unit[b]]] += 1.0 / (m - 1)
    totals = coincidence.sum(axis=1)
    n = totals.sum()
    expected = n * n - float((totals ** 2).sum())  # sum over c != k of n_c * n_k
    if n < 2 or expected == 0:
        return math.nan
    disagreement = n - float(np.trace(coincidence))
    return float(1 - (n - 1) * disagreement / expected)


def cohen_kappa(a: list[Any], b: list[Any]) -> float:
    """Cohen's kappa of two raters on the same rows (scikit-learn's); NaN when undefined (one shared label)."""
    import warnings

    from sklearn.metrics import cohen_kappa_score

    if not a:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 0/0 when both raters used a single identical label: NaN, reported as such
        value = cohen_kappa_score([str(x) for x in a], [str(x) for x in b])
    return float(value)


# ------------------------------------------------------------------------------------------ files -> report


@dataclass
class Annotations:
    """One annotator's file: id -> label, and id -> line (for the adjudication sheet and error messages)."""

    path: str
    labels: dict[str, str]
    lines: dict[str, int]
    unlabelled: list[str] = field(default_factory=list)  # ids present but with no label


def _label_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def read_annotations(path: str, label_field: str, id_field: str) -> Annotations:
    """Every row needs an id (unique in the file); a row without the label counts as not labelled (missing)."""
    from tuneforge.data.formats import read_objects
    from tuneforge.data.split import _MISSING, get_field

    shown = str(path)
    if not Path(path).exists():
        raise DataError(f"{shown}: no such annotation file")
    labels: dict[str, str] = {}
    lines: dict[str, int] = {}
    unlabelled: list[str] = []
    problems: list[str] = []
    for lineno, row in read_objects(Path(path), shown):
        row_id = get_field(row, id_field)
        if row_id is _MISSING:
            problems.append(f"{shown}:{lineno}: {id_field}: missing (rows are matched across files by it)")
            continue
        key = _label_text(row_id)
        if key in lines:
            problems.append(f"{shown}:{lineno}: {id_field}: duplicate id {key!r} (first on line {lines[key]})")
            continue
        lines[key] = lineno
        value = get_field(row, label_field)
        if value is _MISSING:
            unlabelled.append(key)
        else:
            labels[key] = _label_text(value)
    if problems:
        shown_problems = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise DataError(f"{len(problems)} problem(s) in {shown}:\n  " + "\n  ".join(shown_problems),
                        hint=f"every row needs a unique --id field ({id_field!r})")
    if not lines:
        raise DataError(f"{shown}: no rows")
    return Annotations(shown, labels, lines, unlabelled)


def _statistics(matrix: list[list[str | None]], raters: list[str]) -> dict:
    """The three statistics on a rows x raters matrix of labels (None = not labelled)."""
    pairwise = {}
    for i, j in combinations(range(len(raters)), 2):
        both = [(row[i], row[j]) for row in matrix if row[i] is not None and row[j] is not None]
        pairwise[f"{raters[i]} vs {raters[j]}"] = {
            "kappa": _clean(cohen_kappa([a for a, _ in both], [b for _, b in both])), "rows": len(both)}
    complete = [row for row in matrix if all(v is not None for v in row)]
    categories = sorted({v for row in matrix for v in row if v is not None})
    fleiss = math.nan
    if complete and len(raters) >= 2:
        table = np.array([[row.count(c) for c in categories] for row in complete])
        fleiss = fleiss_kappa(table)
    alpha = krippendorff_alpha_nominal([[v for v in row if v is not None] for row in matrix])
    kappas = [p["kappa"] for p in pairwise.values() if p["kappa"] is not None]
    return {"cohen_kappa": pairwise, "cohen_kappa_mean": _clean(float(np.mean(kappas))) if kappas else None,
            "fleiss_kappa": _clean(fleiss), "fleiss_rows": len(complete),
            "krippendorff_alpha": _clean(alpha)}


def _clean(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 6)


def agreement_report(files: list[Annotations]) -> dict:
    """Overall and per-label (one-vs-rest) agreement, missing rows per file, and the rows to adjudicate."""
    if len(files) < 2:
        raise DataError("agreement needs at least two annotators' files")
    raters = _rater_names([f.path for f in files])
    ids = sorted({i for f in files for i in f.lines}, key=_natural)
    missing = {raters[k]: [i for i in ids if i not in f.lines] for k, f in enumerate(files)}
    unlabelled = {raters[k]: list(f.unlabelled) for k, f in enumerate(files)}
    matrix = [[f.labels.get(i) for f in files] for i in ids]
    categories = sorted({v for row in matrix for v in row if v is not None})
    per_label = {}
    for category in categories:
        binary = [[None if v is None else ("yes" if v == category else "no") for v in row] for row in matrix]
        per_label[category] = {**_statistics(binary, raters),
                               "count": sum(v == category for row in matrix for v in row)}
    adjudicate = []
    for row_id, row in zip(ids, matrix):
        given = [v for v in row if v is not None]
        if len(set(given)) > 1:
            counts = {c: given.count(c) for c in sorted(set(given))}
            top = max(counts.values())
            leaders = [c for c, n in counts.items() if n == top]
            adjudicate.append({
                "id": row_id, "labels": dict(zip(raters, row)),
                "majority": leaders[0] if len(leaders) == 1 else None,
                "where": {raters[k]: f"{f.path}:{f.lines[row_id]}" for k, f in enumerate(files) if row_id in f.lines},
            })
    return {"raters": dict(zip(raters, [f.path for f in files])), "rows": len(ids), "labels": categories,
            "overall": _statistics(matrix, raters), "per_label": per_label,
            "missing": {r: v for r, v in missing.items() if v},
            "unlabelled": {r: v for r, v in unlabelled.items() if v},
            "rows_labelled_by_all": sum(all(v is not None for v in row) for row in matrix),
            "adjudicate": adjudicate}


def _rater_names(paths: list[str]) -> list[str]:
    # File stems name the raters; the full path only when two stems collide (ann/a.jsonl vs b/a.jsonl).
    stems = [Path(p).stem for p in paths]
    return stems if len(set(stems)) == len(stems) else list(paths)


def _natural(value: str):
    return (0, int(value), "") if value.lstrip("-").isdigit() else (1, 0, value)
