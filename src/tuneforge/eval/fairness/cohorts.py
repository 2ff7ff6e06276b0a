"""Every metric per cohort (a row field such as gender, dialect or region) with bootstrap intervals, and the largest
gap between cohorts with its interval.

Stored per model as ``models.X.cohorts``::

    {"field": "group", "cohorts": {"a": {"item_count": 3, "exact_match": {"mean", "ci_low", "ci_high"}}, ...},
     "gaps": {"exact_match": {"gap", "ci_low", "ci_high", "highest", "lowest", "n_cohorts"}}}

and the gap as ``summary["cohort_gap:METRIC"]`` so a gate reads it (``cohort_gap:exact_match <= 0.1``).

The gap is max - min of the cohort means. Its interval resamples items within each cohort independently
(stratified bootstrap: cohort sizes stay fixed, as they are by design of the test set) and takes max - min of
the resampled means. Max - min is biased upward on small cohorts (noise alone opens a gap), so read the interval,
not just the point: a gap whose interval reaches 0 is not shown to exist.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from tuneforge.eval.bootstrap import bootstrap_mean, resample_means

#: Prefix of the gap metrics in a side's summary; `tuneforge.eval.registry` resolves `cohort_gap:METRIC` names.
GAP_PREFIX = "cohort_gap:"


def cohort_report(per_item: list[dict], cohort_of: dict[str, str | None], metrics: list[str], *, field: str | None,
                  seed: int = 0, n_resamples: int = 2000, confidence: float = 0.95) -> dict | None:
    """The `cohorts` block (module docstring) over items that have a cohort; None when no item has one."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in per_item:
        name = cohort_of.get(record["id"])
        if name is not None:
            groups[name].append(record)
    if not groups:
        return None
    cohorts: dict[str, dict] = {}
    usable = [m for m in metrics if all(m in r["scores"] for records in groups.values() for r in records)]
    for name in sorted(groups):
        records = groups[name]
        entry: dict = {"item_count": len(records)}
        for metric in usable:
            interval = bootstrap_mean([r["scores"][metric] for r in records], n_resamples=n_resamples,
                                      confidence=confidence, seed=seed)
            entry[metric] = {"mean": interval.mean, "ci_low": interval.ci_low, "ci_high": interval.ci_high}
        cohorts[name] = entry
    gaps = {}
    if len(groups) > 1:
        for metric in usable:
            gaps[metric] = cohort_gap({name: [r["scores"][metric] for r in groups[name]] for name in sorted(groups)},
                                      seed=seed, n_resamples=n_resamples, confidence=confidence)
    return {"field": field, "confidence": confidence, "cohorts": cohorts, "gaps": gaps}


def cohort_gap(values: dict[str, list[float]], *, seed: int = 0, n_resamples: int = 2000,
               confidence: float = 0.95) -> dict:
    """max - min of the cohort means, with a stratified bootstrap interval (module docstring)."""
    if len(values) < 2:
        raise ValueError("a gap needs at least two cohorts")
    arrays = {name: np.asarray(v, dtype=np.float64) for name, v in values.items()}
    means = {name: float(a.mean()) for name, a in arrays.items()}
    highest = max(means, key=lambda k: (means[k], k))
    lowest = min(means, key=lambda k: (means[k], k))
    rng = np.random.default_rng(seed)
    resampled = np.stack([resample_means(a, n_resamples, rng) for a in arrays.values()])
    spread = resampled.max(axis=0) - resampled.min(axis=0)
    alpha = 1.0 - confidence
    low, high = np.quantile(spread, [alpha / 2, 1 - alpha / 2])
    return {"gap": means[highest] - means[lowest], "ci_low": float(low), "ci_high": float(high),
            "highest": highest, "lowest": lowest, "n_cohorts": len(arrays)}


def gap_summary(report: dict | None) -> dict[str, float]:
    """{"cohort_gap:METRIC": gap} for a side's summary."""
    return {f"{GAP_PREFIX}{m}": g["gap"] for m, g in ((report or {}).get("gaps") or {}).items()}
