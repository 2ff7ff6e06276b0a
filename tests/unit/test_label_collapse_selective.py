"""Label tasks: predicted vs reference distribution, collapse flag (results, report, terminal) and selective
prediction (accuracy vs coverage), against hand-worked values (issue 13, item 21)."""
from __future__ import annotations

import io

import pytest
from rich.console import Console

from tuneforge.eval.label_metrics import collapse_check, selective_prediction
from tuneforge.eval.labels import NO_LABEL, score_label_task

PROBS = [{"a": 0.9, "b": 0.1}, {"a": 0.8, "b": 0.2}, {"a": 0.6, "b": 0.4}, {"a": 0.45, "b": 0.55}]
REFS = ["a", "b", "a", "b"]


def test_selective_prediction_hand_worked():
    # confidence .9 .8 .6 .55, predicted a a a b, correct 1 0 1 1
    result = selective_prediction(PROBS, REFS, ["a", "b"], thresholds=(0.0, 0.7, 0.85, 0.95))
    # most confident first: acc@1 = 1, acc@2 = 1/2, acc@3 = 2/3, acc@4 = 3/4
    assert result["curve"] == [[0.25, 1.0], [0.5, 0.5], [0.75, pytest.approx(2 / 3)], [1.0, 0.75]]
    assert result["auc"] == pytest.approx((1 + 0.5 + 2 / 3 + 0.75) / 4)
    rows = {r["threshold"]: r for r in result["thresholds"]}
    assert (rows[0.0]["coverage"], rows[0.0]["accuracy"]) == (1.0, 0.75)
    assert (rows[0.7]["coverage"], rows[0.7]["accuracy"], rows[0.7]["answered"]) == (0.5, 0.5, 2)
    assert (rows[0.85]["coverage"], rows[0.85]["accuracy"]) == (0.25, 1.0)
    assert (rows[0.95]["coverage"], rows[0.95]["accuracy"]) == (0.0, None)


def test_collapse_flag_hand_worked():
    # 9 of 10 predicted 'a' (90%) while references are half 'a' -> collapse
    collapsed = collapse_check(["a"] * 9 + ["b"], ["a", "b"] * 5)
    assert collapsed == {"label": "a", "share": 0.9, "reference_share": 0.5, "collapsed": True}
    # the references are as skewed (90% predicted, 80% of references) -> not collapse
    assert not collapse_check(["a"] * 9 + ["b"], ["a"] * 8 + ["b"] * 2)["collapsed"]
    # 80% is not above the threshold
    assert not collapse_check(["a"] * 8 + ["b"] * 2, ["a", "b"] * 5)["collapsed"]


def test_label_report_carries_distribution_collapse_and_selective():
    predictions = ["a"] * 9 + [None]
    report = score_label_task(predictions, ["a", "b"] * 5, ["a", "b"], None)
    assert report["distribution"] == {"predicted": {"a": 9, "b": 0, NO_LABEL: 1}, "reference": {"a": 5, "b": 5}}
    assert report["collapse"]["collapsed"] and report["collapse"]["label"] == "a"
    assert "selective" not in report  # no probabilities (an endpoint): nothing to abstain on
    with_probs = score_label_task(["a", "a", "a", "b"], REFS, ["a", "b"], PROBS)
    assert with_probs["selective"]["auc"] == pytest.approx((1 + 0.5 + 2 / 3 + 0.75) / 4)
    assert not with_probs["collapse"]["collapsed"]


def _results(report: dict) -> dict:
    return {"task": "t", "n_items": 10, "metrics": ["accuracy"], "headline_metric": "accuracy", "comparison": {},
            "items": [], "notes": [], "models": {"tuned": {"source": "m", "summary": {"accuracy": 0.5}, "slices": {},
                                                            "label_report": report}}}


def test_collapse_and_selective_in_report_and_terminal():
    from tuneforge.eval.pipeline import print_summary
    from tuneforge.report.eval_report import render_eval_report

    probs = [{"a": 0.9, "b": 0.1}] * 9 + [{"a": 0.3, "b": 0.7}]
    report = score_label_task(["a"] * 9 + ["b"], ["a", "b"] * 5, ["a", "b"], probs)
    html = render_eval_report(_results(report))
    assert "label collapse: tuned predicts &#x27;a&#x27; for 90% of the items, while 50% of the references" in html
    assert "selective prediction" in html and "area under the accuracy-coverage curve" in html
    assert "predicted vs reference labels" in html and "9 (90%)" in html
    # references alternate a, b; the tuned model says 'a' nine times and 'b' once (on a 'b' item)
    assert report["confusion"] == {"labels": ["a", "b"], "matrix": [[5, 0], [4, 1]]}
    assert "tuned: confusion matrix (rows: reference, columns: predicted)" in html
    buffer = io.StringIO()
    print_summary(_results(report), Console(file=buffer, width=200))
    assert "warning: label collapse: tuned predicts 'a' for 90% of the items" in buffer.getvalue()
