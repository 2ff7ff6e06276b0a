"""Paired bootstrap for "is the tuned model better than the base on these items, and by how much?".

Both models answer the same items, so the scores are paired: item difficulty is shared, and resampling items
(not scores of each model separately) keeps that pairing. Each resample draws n item indices with replacement and
takes the mean of the per-item differences b - a at those indices.

- Interval: the percentile interval of the resampled mean differences at the requested confidence.
- p-value (two-sided, H0: mean difference 0): the resampled means are shifted to be centred on zero, which is how
  they would be distributed under H0 if the spread is the same, and p is the share of shifted means at least as far
  from zero as the observed delta, with the usual +1 correction, (1 + count) / (1 + n_resamples), so an estimate is
  never exactly 0 from a finite number of resamples.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

# Index matrices are built in chunks of about this many entries (8 bytes each), so 10k resamples of a large test set
# do not allocate gigabytes at once.
_CHUNK_ENTRIES = 4_000_000


@dataclass
class PairedResult:
    """Outcome of `paired_bootstrap`; `delta` is mean_b - mean_a (positive: b, the tuned model, is better)."""

    metric: str
    n: int
    mean_a: float
    mean_b: float
    delta: float
    ci_low: float
    ci_high: float
    confidence: float
    p_value: float

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def significant(self) -> bool:
        """True when the interval excludes zero."""
        return self.ci_low > 0 or self.ci_high < 0


def _as_scores(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a flat sequence of per-item scores")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds a NaN or infinite score; every item needs a finite score")
    return array


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    metric: str = "",
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedResult:
    """Paired bootstrap of mean(b) - mean(a) over items; see the module docstring for the method."""
    scores_a = _as_scores(a, "a")
    scores_b = _as_scores(b, "b")
    if scores_a.shape != scores_b.shape:
        raise ValueError(f"paired scores need equal lengths, got {scores_a.size} and {scores_b.size}")
    n = int(scores_a.size)
    if n == 0:
        raise ValueError("paired_bootstrap needs at least one item")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")

    differences = scores_b - scores_a
    delta = float(differences.mean())
    mean_a = float(scores_a.mean())
    mean_b = float(scores_b.mean())

    if np.all(differences == differences[0]):
        # Every resample has the same mean; skip the work and avoid float noise around an exact answer.
        constant = float(differences[0])
        p_value = 1.0 if constant == 0.0 else 1.0 / (1 + n_resamples)
        return PairedResult(metric, n, mean_a, mean_b, delta, constant, constant, confidence, p_value)

    rng = np.random.default_rng(seed)
    resampled = np.empty(n_resamples, dtype=np.float64)
    rows_per_chunk = max(1, _CHUNK_ENTRIES // n)
    for start in range(0, n_resamples, rows_per_chunk):
        rows = min(rows_per_chunk, n_resamples - start)
        indices = rng.integers(0, n, size=(rows, n))
        resampled[start : start + rows] = differences[indices].mean(axis=1)

    alpha = 1.0 - confidence
    ci_low, ci_high = np.quantile(resampled, [alpha / 2, 1 - alpha / 2])
    # A small tolerance keeps resamples that equal |delta| up to float rounding on the "as extreme" side.
    extreme = np.count_nonzero(np.abs(resampled - delta) >= abs(delta) - 1e-12)
    p_value = float((1 + extreme) / (1 + n_resamples))
    return PairedResult(metric, n, mean_a, mean_b, delta, float(ci_low), float(ci_high), confidence, min(p_value, 1.0))


def paired_bootstrap_statistic(
    statistic_a: Callable[[np.ndarray], float],
    statistic_b: Callable[[np.ndarray], float],
    n: int,
    *,
    metric: str = "",
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedResult:
    """Paired bootstrap of a corpus-level statistic (macro-F1, ECE, Brier ...) that is not a mean of item scores.

    `statistic_x(indices)` computes the statistic of model x on the items at `indices` (with repeats); both models
    are recomputed on the same resampled items, so the interval is for the paired difference b - a.
    """
    if n == 0:
        raise ValueError("paired_bootstrap_statistic needs at least one item")
    everything = np.arange(n)
    value_a, value_b = float(statistic_a(everything)), float(statistic_b(everything))
    delta = value_b - value_a
    rng = np.random.default_rng(seed)
    resampled = np.empty(n_resamples, dtype=np.float64)
    for row in range(n_resamples):
        indices = rng.integers(0, n, size=n)
        resampled[row] = statistic_b(indices) - statistic_a(indices)
    alpha = 1.0 - confidence
    ci_low, ci_high = np.quantile(resampled, [alpha / 2, 1 - alpha / 2])
    extreme = np.count_nonzero(np.abs(resampled - delta) >= abs(delta) - 1e-12)
    p_value = float((1 + extreme) / (1 + n_resamples))
    return PairedResult(metric, n, value_a, value_b, delta, float(ci_low), float(ci_high), confidence,
                        min(p_value, 1.0))


@dataclass
class MeanInterval:
    """A mean over items and its percentile bootstrap interval (one sample, not a paired difference)."""

    mean: float
    ci_low: float
    ci_high: float
    n: int
    confidence: float

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_mean(values: Sequence[float], *, n_resamples: int = 10000, confidence: float = 0.95,
                   seed: int = 0) -> MeanInterval:
    """Percentile bootstrap interval of the mean of one set of item scores (a cohort's accuracy, a flip rate).

    Same resampling as `paired_bootstrap`, on the values themselves: each resample draws n indices with replacement.
    """
    array = _as_scores(values, "values")
    n = int(array.size)
    if n == 0:
        raise ValueError("bootstrap_mean needs at least one value")
    mean = float(array.mean())
    if np.all(array == array[0]):
        return MeanInterval(mean, mean, mean, n, confidence)
    resampled = resample_means(array, n_resamples, np.random.default_rng(seed))
    alpha = 1.0 - confidence
    low, high = np.quantile(resampled, [alpha / 2, 1 - alpha / 2])
    return MeanInterval(mean, float(low), float(high), n, confidence)


def resample_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """`n_resamples` bootstrap means of `values` (indices drawn in chunks, as in `paired_bootstrap`)."""
    n = int(values.size)
    out = np.empty(n_resamples, dtype=np.float64)
    rows_per_chunk = max(1, _CHUNK_ENTRIES // n)
    for start in range(0, n_resamples, rows_per_chunk):
        rows = min(rows_per_chunk, n_resamples - start)
        out[start : start + rows] = values[rng.integers(0, n, size=(rows, n))].mean(axis=1)
    return out
