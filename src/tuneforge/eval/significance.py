"""Paired significance tests to accompany the bootstrap confidence interval.

The bootstrap (``tuneforge.eval.bootstrap``) says how large the difference between two models plausibly is;
these tests say how surprising the observed difference would be if the models were interchangeable. Both work
on *paired* per-item scores: ``a[i]`` and ``b[i]`` are the two models' scores on the same item.

* Binary scores (every value in {0, 1}, e.g. exact match, pass/fail): **exact McNemar**. Only discordant items
  matter: ``n10`` = items where A is right and B wrong, ``n01`` the reverse. Under H0 each discordant item is
  equally likely to fall either way, so ``n10 ~ Binomial(n10 + n01, 1/2)`` and the two-sided p-value is
  ``min(1, 2 * P(X <= min(n10, n01)))``. Exact, so valid for the small discordant counts typical of evals.
* Continuous scores: **paired permutation (sign-flip) test** on the differences ``d = a - b``. Under H0 the sign
  of each difference is a fair coin; the statistic is ``|sum d|`` (equivalent to ``|mean d|``) and the p-value
  is the share of sign assignments at least as extreme. With at most ``exact_max`` non-zero differences all
  ``2^n`` assignments are enumerated (exact); otherwise ``n_resamples`` random assignments are drawn and
  ``p = (1 + hits) / (1 + n_resamples)``, which never reports an impossible p of 0.

``paired_test`` picks between them by looking at the scores. Both are two-sided.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

__all__ = ["SignificanceResult", "mcnemar_exact", "permutation_test", "paired_test", "paired_tests", "is_binary"]

MCNEMAR = "mcnemar_exact"
PERMUTATION_EXACT = "permutation_sign_flip_exact"
PERMUTATION_MC = "permutation_sign_flip_monte_carlo"

# Relative tolerance when comparing resampled statistics with the observed one: sums of floats in a different
# order differ in the last bits, and a tie must count as "at least as extreme".
_TIE_RTOL = 1e-9


@dataclass(frozen=True)
class SignificanceResult:
    test: str
    p_value: float
    n: int  # paired items
    statistic: float  # McNemar: n10 - n01; permutation: mean difference a - b
    n_discordant: int | None = None  # McNemar only: n10 + n01
    n_resamples: int | None = None  # Monte Carlo permutation only


def _pairs(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired scores must be two equal-length lists, got {len(a)} and {len(b)}")
    if x.size == 0:
        raise ValueError("need at least one paired item")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("scores must be finite")
    return x, y


def is_binary(*scores: Sequence[float]) -> bool:
    return all(np.isin(np.asarray(s, dtype=float), (0.0, 1.0)).all() for s in scores)


def mcnemar_exact(a: Sequence[float], b: Sequence[float]) -> SignificanceResult:
    x, y = _pairs(a, b)
    if not is_binary(x, y):
        raise ValueError("McNemar needs binary scores (0/1); use permutation_test for continuous scores")
    n10 = int(((x == 1) & (y == 0)).sum())
    n01 = int(((x == 0) & (y == 1)).sum())
    discordant = n10 + n01
    # Exact integer arithmetic: int / int true division rounds correctly even for huge counts, and it avoids
    # importing scipy.stats (seconds) for one binomial tail.
    tail = sum(math.comb(discordant, i) for i in range(min(n10, n01) + 1))
    p = 1.0 if discordant == 0 else min(1.0, 2 * tail / 2**discordant)
    return SignificanceResult(MCNEMAR, p, int(x.size), float(n10 - n01), n_discordant=discordant)


def permutation_test(
    a: Sequence[float], b: Sequence[float], n_resamples: int = 10_000, seed: int = 0, exact_max: int = 16
) -> SignificanceResult:
    x, y = _pairs(a, b)
    d_all = x - y
    # Zero differences keep their value under any sign, so they cannot change |sum d|; dropping them shrinks
    # the exact enumeration without changing the p-value.
    d = d_all[d_all != 0]
    observed = abs(d.sum())
    mean_diff = float(d_all.mean())
    if d.size == 0:
        return SignificanceResult(PERMUTATION_EXACT, 1.0, int(x.size), mean_diff)
    threshold = observed * (1 - _TIE_RTOL)
    if d.size <= exact_max:
        # Rows of the matrix enumerate all 2^n sign vectors via the bits of 0..2^n-1.
        codes = np.arange(2 ** d.size)[:, None]
        signs = 1 - 2 * ((codes >> np.arange(d.size)) & 1)
        hits = int((np.abs(signs @ d) >= threshold).sum())
        return SignificanceResult(PERMUTATION_EXACT, hits / 2 ** d.size, int(x.size), mean_diff)
    if n_resamples < 1:
        raise ValueError("n_resamples must be positive")
    rng = np.random.default_rng(seed)
    hits, done = 0, 0
    # Chunked so memory stays ~8 MB whatever n and n_resamples are.
    chunk = max(1, 1_000_000 // d.size)
    while done < n_resamples:
        m = min(chunk, n_resamples - done)
        signs = rng.integers(0, 2, size=(m, d.size), dtype=np.int8) * 2 - 1
        hits += int((np.abs(signs @ d) >= threshold).sum())
        done += m
    return SignificanceResult(
        PERMUTATION_MC, (1 + hits) / (1 + n_resamples), int(x.size), mean_diff, n_resamples=n_resamples
    )


def paired_test(
    a: Sequence[float], b: Sequence[float], n_resamples: int = 10_000, seed: int = 0
) -> SignificanceResult:
    """Exact McNemar when both score lists are 0/1, else the sign-flip permutation test."""
    if is_binary(a, b):
        return mcnemar_exact(a, b)
    return permutation_test(a, b, n_resamples=n_resamples, seed=seed)


def paired_tests(
    scores_a: Mapping[str, Sequence[float]], scores_b: Mapping[str, Sequence[float]], n_resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, SignificanceResult]:
    """One test per metric present in both models' per-item scores."""
    missing = set(scores_a) ^ set(scores_b)
    if missing:
        raise ValueError(f"metrics not scored for both models: {sorted(missing)}")
    return {m: paired_test(scores_a[m], scores_b[m], n_resamples, seed) for m in scores_a}
