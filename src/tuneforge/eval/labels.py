"""Label tasks (sentiment, routing, multiple choice): the answer is one of a fixed set of labels.

Local models are scored from label-token probabilities (`InferenceEngine.label_logprobs`), not from generated
text: for every label we compute log P(label tokens | prompt) - the prompt being exactly the generation prompt -
and the prediction is the most probable label. This never fails to parse, and it yields the probabilities that
calibration (ECE, Brier, the reliability diagram) needs. The sum over a label's tokens is a real sequence
probability; it is renormalised over the label set (`logprobs_to_probs`), i.e. "which of these labels, given that
the answer is one of them".

Endpoints expose no such forced-continuation probabilities (see `eval.endpoint`), so their answer text is mapped
to a label (`match_label`) and only accuracy, macro-F1 and the confusion matrix are reported; the results say so.
"""
from __future__ import annotations

import re

from tuneforge.eval import label_metrics as lm

NO_LABEL = "(no label)"
CALIBRATION_UNAVAILABLE = ("calibration (ece, brier, reliability) needs label-token probabilities; an endpoint "
                           "model does not expose them, so only accuracy, macro_f1 and the confusion matrix are given")


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.casefold()).split())


def match_label(answer: str, labels: list[str]) -> str | None:
    """The label a free-text answer names: equal after normalisation, else the longest label the answer starts
    with, else the only label mentioned anywhere; None when it names none or several."""
    text = _words(answer)
    normalised = {label: _words(label) for label in labels}
    for label, norm in normalised.items():
        if text == norm:
            return label
    starts = [label for label, norm in normalised.items() if norm and (text + " ").startswith(norm + " ")]
    if starts:
        return max(starts, key=lambda label: len(normalised[label]))
    mentioned = [label for label, norm in normalised.items() if norm and f" {norm} " in f" {text} "]
    return mentioned[0] if len(mentioned) == 1 else None


def score_label_task(predictions: list[str | None], references: list[str], labels: list[str],
                     probs: list[dict[str, float]] | None, n_bins: int = 10) -> dict:
    """Summary metrics plus the confusion matrix, per-class scores, the predicted vs reference label distribution,
    the collapse check and (with probs) the reliability data and selective prediction (accuracy vs coverage)."""
    shown = [p if p is not None else NO_LABEL for p in predictions]
    order = list(labels) + ([NO_LABEL] if NO_LABEL in shown else [])
    confusion = lm.confusion_matrix(shown, references, order)
    per_class = lm.per_class_scores(shown, references, order)
    summary = {"accuracy": lm.accuracy(shown, references),
               # Macro-F1 over the task's labels only: "(no label)" is never a reference, so its F1 is always 0
               # and would drag the mean down for a reason accuracy already counts.
               "macro_f1": sum(per_class[label].f1 for label in labels) / len(labels)}
    report = {"labels": list(labels), "confusion": {"labels": confusion.labels, "matrix": confusion.matrix},
              "per_class": {str(k): vars(v) for k, v in per_class.items()},
              "distribution": {"predicted": lm.label_distribution(shown, labels),
                               "reference": lm.label_distribution(references, labels)},
              "collapse": lm.collapse_check(shown, references)}
    if probs is None:
        report["calibration"] = None
        report["calibration_note"] = CALIBRATION_UNAVAILABLE
    else:
        summary["ece"] = lm.expected_calibration_error(probs, references, n_bins, labels)
        summary["brier"] = lm.brier_score(probs, references, labels)
        bins = lm.reliability_bins(probs, references, n_bins, labels)
        svg = lm.reliability_diagram_svg(bins)
        # Drop the XML prolog and DOCTYPE so the SVG can sit inline in an HTML page.
        report["calibration"] = {"bins": [vars(b) for b in bins], "svg": svg[svg.find("<svg"):]}
        report["selective"] = lm.selective_prediction(probs, references, labels)
    report["summary"] = summary
    return report


def predict_from_logprobs(logprobs: list[dict[str, float]], labels: list[str]) -> tuple[list[str], list[dict]]:
    """(most probable label per item, label distribution per item); ties go to the earlier label."""
    probs = [lm.logprobs_to_probs(row) for row in logprobs]
    predictions = [max(labels, key=lambda label, p=p: (p[label], -labels.index(label))) for p in probs]
    return predictions, probs


def collapse_warning(name: str, report: dict) -> str | None:
    """One line saying a model predicts nearly one label whatever the item, or None (see label_metrics)."""
    collapse = report.get("collapse") or {}
    if not collapse.get("collapsed"):
        return None
    return (f"label collapse: {name} predicts {collapse['label']!r} for {collapse['share']:.0%} of the items, while "
            f"{collapse['reference_share']:.0%} of the references are {collapse['label']!r}")
