"""Label metrics and calibration against hand-worked values."""
from __future__ import annotations

import math

import pytest

from tuneforge.eval import label_metrics as lm

TARGETS = ["a", "a", "b", "b", "c"]
PREDS = ["a", "b", "b", "b", "a"]


def test_accuracy_and_confusion_matrix():
    assert lm.accuracy(PREDS, TARGETS) == pytest.approx(3 / 5)
    cm = lm.confusion_matrix(PREDS, TARGETS)
    # rows = target, columns = prediction, labels sorted.
    assert cm.labels == ["a", "b", "c"]
    assert cm.matrix == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert cm.count("c", "a") == 1
    # An explicit label order is kept, including labels that never occur.
    cm2 = lm.confusion_matrix(PREDS, TARGETS, labels=["c", "b", "a", "d"])
    assert cm2.matrix[0] == [0, 0, 1, 0] and cm2.matrix[3] == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="not in the given label order"):
        lm.confusion_matrix(PREDS, TARGETS, labels=["a", "b"])


def test_per_class_scores_and_macro_f1_hand_worked():
    s = lm.per_class_scores(PREDS, TARGETS)
    # a: tp 1, predicted 2, support 2 -> P = R = F = 1/2.
    assert (s["a"].precision, s["a"].recall, s["a"].f1, s["a"].support) == (0.5, 0.5, 0.5, 2)
    # b: tp 2, predicted 3, support 2 -> P = 2/3, R = 1, F = 2 * (2/3) / (5/3) = 0.8.
    assert s["b"].precision == pytest.approx(2 / 3) and s["b"].recall == 1.0 and s["b"].f1 == pytest.approx(0.8)
    # c: never predicted -> precision 0 by the zero-division convention, F = 0.
    assert (s["c"].precision, s["c"].recall, s["c"].f1) == (0.0, 0.0, 0.0)
    assert lm.macro_f1(PREDS, TARGETS) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


# Four items, two labels, 4 bins (0,.25] (.25,.5] (.5,.75] (.75,1]:
#   1: x .9 target x -> conf .9 right (bin 3)     2: x .8 target y -> conf .8 wrong (bin 3)
#   3: y .6 target y -> conf .6 right (bin 2)     4: y .7 target y -> conf .7 right (bin 2)
# bin 3: conf .85, acc .5 -> |.5 - .85| = .35, weight 2/4;  bin 2: conf .65, acc 1 -> .35, weight 2/4.
# ECE = .5 * .35 + .5 * .35 = .35.
# Brier: (.1^2 + .1^2) + (.8^2 + .8^2) + (.4^2 + .4^2) + (.3^2 + .3^2) = .02 + 1.28 + .32 + .18 = 1.8; / 4 = .45.
PROBS = [{"x": 0.9, "y": 0.1}, {"x": 0.8, "y": 0.2}, {"x": 0.4, "y": 0.6}, {"x": 0.3, "y": 0.7}]
CAL_TARGETS = ["x", "y", "y", "y"]


def test_ece_hand_worked():
    assert lm.expected_calibration_error(PROBS, CAL_TARGETS, n_bins=4) == pytest.approx(0.35)


def test_brier_hand_worked():
    assert lm.brier_score(PROBS, CAL_TARGETS) == pytest.approx(0.45)
    # A label absent from a row has probability 0: {x: 1} with target y -> (1 - 0)^2 + (0 - 1)^2 = 2.
    assert lm.brier_score([{"x": 1.0}], ["y"]) == pytest.approx(2.0)


def test_reliability_bins():
    bins = lm.reliability_bins(PROBS, CAL_TARGETS, n_bins=4)
    assert [b.count for b in bins] == [0, 0, 2, 2]
    assert bins[0].confidence is None and bins[0].accuracy is None
    assert bins[2].confidence == pytest.approx(0.65) and bins[2].accuracy == 1.0
    assert bins[3].confidence == pytest.approx(0.85) and bins[3].accuracy == 0.5
    assert (bins[3].lower, bins[3].upper) == (0.75, 1.0)


def test_bins_are_right_closed_and_ties_go_to_the_first_label():
    # Confidence exactly 0.5 belongs to (.25, .5], exactly .75 to (.5, .75].
    rows = [{"a": 0.5, "b": 0.25, "c": 0.25}, {"a": 0.75, "b": 0.25}]
    bins = lm.reliability_bins(rows, ["a", "a"], n_bins=4)
    assert [b.count for b in bins] == [0, 1, 1, 0]
    # Tie .5/.5 -> top label "x" (first in order); the target is "y", so the item is wrong.
    tie = lm.reliability_bins([{"x": 0.5, "y": 0.5}], ["y"], n_bins=2)
    assert tie[0].accuracy == 0.0


def test_probability_rows_must_be_distributions():
    with pytest.raises(ValueError, match="sums to"):
        lm.brier_score([{"x": 0.5, "y": 0.2}], ["x"])
    with pytest.raises(ValueError, match="non-negative"):
        lm.brier_score([{"x": 1.2, "y": -0.2}], ["x"])


def test_logprobs_to_probs():
    p = lm.logprobs_to_probs({"a": math.log(0.2), "b": math.log(0.6)})
    assert p == pytest.approx({"a": 0.25, "b": 0.75})
    # Very negative log-probs must not underflow: softmax of (-1000, -1001) = (1, e^-1) / (1 + e^-1).
    p = lm.logprobs_to_probs({"a": -1000.0, "b": -1001.0})
    assert p["a"] == pytest.approx(1 / (1 + math.exp(-1)))
    # Length-normalised: a = -2 over 2 tokens -> -1, b = -3 over 1 token -> -3; P(a) = 1 / (1 + e^-2).
    p = lm.logprobs_to_probs({"a": -2.0, "b": -3.0}, token_counts={"a": 2, "b": 1})
    assert p["a"] == pytest.approx(1 / (1 + math.exp(-2)))
    with pytest.raises(ValueError):
        lm.logprobs_to_probs({"a": -math.inf})


def test_reliability_diagram_svg_is_deterministic():
    bins = lm.reliability_bins(PROBS, CAL_TARGETS, n_bins=4)
    svg = lm.reliability_diagram_svg(bins, title="test")
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "test" in svg
    assert svg == lm.reliability_diagram_svg(bins, title="test")
