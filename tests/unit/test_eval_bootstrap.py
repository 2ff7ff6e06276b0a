"""Paired bootstrap: exact delta, sensible intervals and p-values, determinism, and the degenerate cases."""
from __future__ import annotations

import numpy as np
import pytest

from tuneforge.eval import bootstrap
from tuneforge.eval.bootstrap import PairedResult, paired_bootstrap


def test_delta_and_means_are_exact():
    result = paired_bootstrap([0, 0, 1, 1], [1, 0, 1, 1], metric="exact_match", n_resamples=2000)
    assert (result.mean_a, result.mean_b, result.delta, result.n) == (0.5, 0.75, 0.25, 4)
    assert result.metric == "exact_match"
    assert result.ci_low <= result.delta <= result.ci_high


def test_two_item_case_matches_the_hand_worked_distribution():
    # differences [0, 1]: resampled means are 0, 0.5, 1 with probability 1/4, 1/2, 1/4. The 95% interval spans
    # [0, 1]; the zero-centred means are at least 0.5 from zero with probability 1/2, so p is about 0.5.
    result = paired_bootstrap([0, 0], [0, 1], n_resamples=20000, seed=1)
    assert result.delta == 0.5
    assert (result.ci_low, result.ci_high) == (0.0, 1.0)
    assert result.p_value == pytest.approx(0.5, abs=0.02)


def test_deterministic_for_a_seed():
    rng = np.random.default_rng(3)
    a, b = rng.random(50), rng.random(50)
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    assert paired_bootstrap(a, b, seed=7).ci_low != paired_bootstrap(a, b, seed=8).ci_low


def test_interval_narrows_with_more_items():
    rng = np.random.default_rng(0)

    def width(n: int) -> float:
        a = rng.integers(0, 2, n).astype(float)
        b = np.where(rng.random(n) < 0.2, 1 - a, a)
        result = paired_bootstrap(a, b, n_resamples=4000)
        return result.ci_high - result.ci_low

    assert width(2000) < width(200) / 2


def test_clearly_better_b_excludes_zero():
    rng = np.random.default_rng(1)
    a = (rng.random(200) < 0.3).astype(float)
    b = np.maximum(a, (rng.random(200) < 0.5).astype(float))
    result = paired_bootstrap(a, b, n_resamples=5000)
    assert result.ci_low > 0
    assert result.significant
    assert result.p_value < 0.001
    worse = paired_bootstrap(b, a, n_resamples=5000)
    assert worse.ci_high < 0 and worse.delta == -result.delta


def test_no_difference_gives_a_large_p():
    rng = np.random.default_rng(2)
    a = rng.random(300)
    b = a + rng.normal(0, 0.1, 300)
    b = b - (b.mean() - a.mean())  # exactly the same mean
    result = paired_bootstrap(a, b, n_resamples=4000)
    assert result.delta == pytest.approx(0.0, abs=1e-12)
    assert result.ci_low < 0 < result.ci_high
    assert result.p_value > 0.9


def test_identical_scores_give_a_zero_interval_and_p_one():
    result = paired_bootstrap([1.0, 0.0, 0.5], [1.0, 0.0, 0.5])
    assert (result.delta, result.ci_low, result.ci_high, result.p_value) == (0.0, 0.0, 0.0, 1.0)
    shifted = paired_bootstrap([0.0, 0.5], [1.0, 1.5], n_resamples=99)
    assert (shifted.ci_low, shifted.ci_high, shifted.p_value) == (1.0, 1.0, 0.01)


def test_chunked_resampling_keeps_the_distribution(monkeypatch):
    rng = np.random.default_rng(4)
    a, b = rng.random(40), rng.random(40) + 0.1
    whole = paired_bootstrap(a, b, n_resamples=20000)
    monkeypatch.setattr(bootstrap, "_CHUNK_ENTRIES", 40 * 7)
    chunked = paired_bootstrap(a, b, n_resamples=20000)
    assert chunked.ci_low == pytest.approx(whole.ci_low, abs=0.01)
    assert chunked.ci_high == pytest.approx(whole.ci_high, abs=0.01)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one item"):
        paired_bootstrap([], [])
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap([1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap([float("nan")], [1.0])
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap([1.0], [0.0], confidence=1.0)


def test_to_dict_round_trips():
    result = paired_bootstrap([0, 1, 1], [1, 1, 1], metric="m", n_resamples=500)
    data = result.to_dict()
    assert set(data) == {"metric", "n", "mean_a", "mean_b", "delta", "ci_low", "ci_high", "confidence", "p_value"}
    assert PairedResult(**data) == result
