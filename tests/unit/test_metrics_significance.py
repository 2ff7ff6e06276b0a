"""Paired significance tests against hand-worked values."""
from __future__ import annotations

import pytest

from tuneforge.eval import significance as sg


def test_mcnemar_exact_hand_worked():
    # n10 = 5 (A right, B wrong), n01 = 1, plus 4 concordant items that do not matter.
    a = [1] * 5 + [0] + [1, 1, 0, 0]
    b = [0] * 5 + [1] + [1, 1, 0, 0]
    # Discordant 6; P(X <= 1 | Bin(6, 1/2)) = (1 + 6) / 64; two-sided p = 14/64 = 0.21875.
    r = sg.mcnemar_exact(a, b)
    assert r.p_value == pytest.approx(14 / 64)
    assert (r.test, r.n, r.n_discordant, r.statistic) == ("mcnemar_exact", 10, 6, 4.0)
    # 8 vs 0 discordant: p = 2 * (1/2)^8 = 1/128.
    assert sg.mcnemar_exact([1] * 8, [0] * 8).p_value == pytest.approx(1 / 128)
    # Balanced discordance is capped at 1; no discordance at all gives 1.
    assert sg.mcnemar_exact([1, 0], [0, 1]).p_value == 1.0
    assert sg.mcnemar_exact([1, 1], [1, 1]).p_value == 1.0


def test_permutation_exact_hand_worked():
    # d = a - b = (0.5, 1.0, 1.5); the 8 sign patterns give |sum| = 3, 2, 1, 0, 0, 1, 2, 3.
    # Two of eight are >= the observed 3 -> p = 0.25. The zero difference (last item) changes nothing.
    a, b = [0.5, 1.0, 1.5, 0.7], [0.0, 0.0, 0.0, 0.7]
    r = sg.permutation_test(a, b)
    assert r.test == "permutation_sign_flip_exact"
    assert r.p_value == pytest.approx(0.25)
    assert r.statistic == pytest.approx(3.0 / 4)  # mean difference over all 4 items


def test_permutation_monte_carlo_agrees_with_exact_and_is_seeded():
    a, b = [0.5, 1.0, 1.5], [0.0, 0.0, 0.0]
    r = sg.permutation_test(a, b, n_resamples=20_000, seed=1, exact_max=0)
    assert r.test == "permutation_sign_flip_monte_carlo" and r.n_resamples == 20_000
    assert r.p_value == pytest.approx(0.25, abs=0.015)
    assert r == sg.permutation_test(a, b, n_resamples=20_000, seed=1, exact_max=0)
    # Never an impossible 0: with no resample as extreme, p = 1 / (R + 1).
    big = sg.permutation_test([1.0] * 40, [0.5] * 40, n_resamples=999, exact_max=0)
    assert big.p_value == pytest.approx(1 / 1000)


def test_paired_test_chooses_by_score_type():
    assert sg.paired_test([1, 0, 1], [0.0, 0.0, 1.0]).test == "mcnemar_exact"
    assert sg.paired_test([True, False], [False, False]).test == "mcnemar_exact"
    assert sg.paired_test([0.9, 0.1, 1.0], [0.0, 0.0, 1.0]).test.startswith("permutation")
    res = sg.paired_tests({"em": [1, 0], "f1": [0.5, 0.2]}, {"em": [0, 0], "f1": [0.1, 0.2]})
    assert res["em"].test == "mcnemar_exact" and res["f1"].test.startswith("permutation")
    with pytest.raises(ValueError, match="both models"):
        sg.paired_tests({"em": [1]}, {"f1": [1]})
    with pytest.raises(ValueError, match="equal-length"):
        sg.paired_test([1, 0], [1])
