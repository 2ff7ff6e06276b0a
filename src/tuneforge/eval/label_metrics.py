"""Classification metrics and calibration for label-style tasks (sentiment, routing, multiple choice).

Conventions, stated once so every function agrees:

* Label order is the ``labels`` argument when given, else the sorted union of every label seen (targets,
  predictions and probability keys). Confusion matrices are ``matrix[true][predicted]``.
* Precision/recall/F1 with a zero denominator are 0.0 (a class never predicted has precision 0), matching
  scikit-learn's ``zero_division=0``. Macro-F1 averages over all labels in the order, including classes that
  appear only in predictions.
* Calibration uses **top-label** confidence: for each item, confidence = the largest probability and the item
  is correct when that label is the target. Ties in the largest probability go to the label that comes first in
  the label order, so results are deterministic.
* ECE is the standard top-label expected calibration error of Guo et al. (2017) with ``n_bins`` equal-width
  bins over [0, 1]: ``ECE = sum_b (n_b / N) * |accuracy_b - confidence_b|``. Bin ``b`` covers
  ``(b/B, (b+1)/B]``, with a confidence of exactly 0 put in the first bin.
* The Brier score is the multi-class form ``mean_i sum_k (p_ik - y_ik)^2`` with y one-hot, so it lies in
  [0, 2] (not [0, 1]); a label missing from a probability row has probability 0.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

import numpy as np

Label = Hashable
ProbRow = Mapping[Label, float]

__all__ = [
    "ClassScores",
    "ConfusionMatrix",
    "ReliabilityBin",
    "accuracy",
    "confusion_matrix",
    "per_class_scores",
    "macro_f1",
    "logprobs_to_probs",
    "expected_calibration_error",
    "brier_score",
    "reliability_bins",
    "reliability_diagram_svg",
    "label_distribution",
    "collapse_check",
    "selective_prediction",
]

#: A label predicted for more than this share of the items is a collapse candidate ...
COLLAPSE_SHARE = 0.8
#: ... when it exceeds that label's share of the references by more than this (references skewed alike are fine).
COLLAPSE_EXCESS = 0.2
#: Confidence thresholds of the selective-prediction table.
SELECTIVE_THRESHOLDS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)

_PROB_SUM_TOL = 1e-4


@dataclass(frozen=True)
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int  # number of items whose target is this class


@dataclass(frozen=True)
class ConfusionMatrix:
    labels: list[Label]
    matrix: list[list[int]]  # matrix[i][j]: target labels[i], predicted labels[j]

    def count(self, target: Label, predicted: Label) -> int:
        return self.matrix[self.labels.index(target)][self.labels.index(predicted)]


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    confidence: float | None  # mean top-label confidence of the items in the bin; None when empty
    accuracy: float | None  # fraction of those items whose top label is the target; None when empty
    count: int


def _sorted_labels(labels: set[Label]) -> list[Label]:
    try:
        return sorted(labels)  # type: ignore[type-var]
    except TypeError:
        # Mixed label types (e.g. 1 and "1") cannot be compared; fall back to a stable textual order.
        return sorted(labels, key=lambda x: (type(x).__name__, str(x)))


def _label_order(labels: Sequence[Label] | None, *seen: Sequence[Label]) -> list[Label]:
    if labels is not None:
        order = list(labels)
        if len(set(order)) != len(order):
            raise ValueError("labels must not repeat")
        known = set(order)
        for group in seen:
            unknown = {x for x in group if x not in known}
            if unknown:
                raise ValueError(f"labels {sorted(map(str, unknown))} are not in the given label order")
        return order
    return _sorted_labels({x for group in seen for x in group})


def _check_pairs(predictions: Sequence, targets: Sequence) -> None:
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions but {len(targets)} targets")
    if not targets:
        raise ValueError("cannot score an empty set")


# ------------------------------------------------------------------------------------------ hard-label metrics
def accuracy(predictions: Sequence[Label], targets: Sequence[Label]) -> float:
    _check_pairs(predictions, targets)
    return sum(p == t for p, t in zip(predictions, targets)) / len(targets)


def confusion_matrix(
    predictions: Sequence[Label], targets: Sequence[Label], labels: Sequence[Label] | None = None
) -> ConfusionMatrix:
    _check_pairs(predictions, targets)
    order = _label_order(labels, targets, predictions)
    index = {label: i for i, label in enumerate(order)}
    matrix = [[0] * len(order) for _ in order]
    for p, t in zip(predictions, targets):
        matrix[index[t]][index[p]] += 1
    return ConfusionMatrix(order, matrix)


def _ratio(num: int | float, den: int | float) -> float:
    return num / den if den else 0.0


def per_class_scores(
    predictions: Sequence[Label], targets: Sequence[Label], labels: Sequence[Label] | None = None
) -> dict[Label, ClassScores]:
    cm = confusion_matrix(predictions, targets, labels)
    m = np.asarray(cm.matrix)
    out: dict[Label, ClassScores] = {}
    for i, label in enumerate(cm.labels):
        tp = int(m[i, i])
        predicted = int(m[:, i].sum())
        support = int(m[i, :].sum())
        precision, recall = _ratio(tp, predicted), _ratio(tp, support)
        out[label] = ClassScores(precision, recall, _ratio(2 * precision * recall, precision + recall), support)
    return out


def macro_f1(predictions: Sequence[Label], targets: Sequence[Label], labels: Sequence[Label] | None = None) -> float:
    scores = per_class_scores(predictions, targets, labels)
    return sum(s.f1 for s in scores.values()) / len(scores)


# ------------------------------------------------------------------------------------------------ probabilities
def logprobs_to_probs(
    logprobs: Mapping[Label, float], token_counts: Mapping[Label, int] | None = None
) -> dict[Label, float]:
    """Turn per-label sequence log-probabilities into a distribution over the labels (a softmax).

    ``logprobs[label]`` is the summed log-probability of that label's tokens given the prompt. Longer labels
    collect more negative log-probability, which biases scoring towards short labels; pass ``token_counts`` to
    normalise by length first (mean log-probability per token), the usual correction when labels differ in
    length. The maximum is subtracted before exponentiating so very negative log-probs do not underflow to 0/0.
    """
    if not logprobs:
        raise ValueError("need at least one label")
    scores: dict[Label, float] = {}
    for label, lp in logprobs.items():
        if math.isnan(lp) or lp == math.inf:
            raise ValueError(f"log-probability of {label!r} is {lp}")
        if token_counts is not None:
            n = token_counts.get(label, 0)
            if n <= 0:
                raise ValueError(f"token count of {label!r} must be positive, got {n}")
            lp = lp / n
        scores[label] = lp
    top = max(scores.values())
    if top == -math.inf:
        raise ValueError("every label has probability 0 (log-probability -inf)")
    weights = {label: math.exp(s - top) for label, s in scores.items()}
    total = sum(weights.values())
    return {label: w / total for label, w in weights.items()}


def _prob_matrix(
    probs: Sequence[ProbRow], targets: Sequence[Label], labels: Sequence[Label] | None
) -> tuple[list[Label], np.ndarray, np.ndarray]:
    _check_pairs(probs, targets)
    order = _label_order(labels, targets, [k for row in probs for k in row])
    index = {label: i for i, label in enumerate(order)}
    p = np.zeros((len(probs), len(order)))
    for i, row in enumerate(probs):
        for label, value in row.items():
            p[i, index[label]] = value
    if (p < 0).any() or not np.isfinite(p).all():
        raise ValueError("probabilities must be finite and non-negative")
    sums = p.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > _PROB_SUM_TOL)
    if bad.size:
        raise ValueError(
            f"probability row {int(bad[0])} sums to {sums[bad[0]]:.6f}, not 1; "
            "normalise log-probabilities with logprobs_to_probs first"
        )
    y = np.array([index[t] for t in targets])
    return order, p, y


def _top_label(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # np.argmax returns the first maximum, i.e. ties go to the earliest label in the order.
    pred = p.argmax(axis=1)
    return p[np.arange(len(p)), pred], (pred == y).astype(float)


def _bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # side="left" gives edges[i-1] < c <= edges[i], i.e. right-closed bins (b/B, (b+1)/B].
    return np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)


def reliability_bins(
    probs: Sequence[ProbRow], targets: Sequence[Label], n_bins: int = 10, labels: Sequence[Label] | None = None
) -> list[ReliabilityBin]:
    """Per equal-width bin: mean top-label confidence, accuracy and item count (the reliability diagram data)."""
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    _, p, y = _prob_matrix(probs, targets, labels)
    conf, correct = _top_label(p, y)
    idx = _bin_index(conf, n_bins)
    out = []
    for b in range(n_bins):
        mask = idx == b
        n = int(mask.sum())
        out.append(
            ReliabilityBin(
                lower=b / n_bins,
                upper=(b + 1) / n_bins,
                confidence=float(conf[mask].mean()) if n else None,
                accuracy=float(correct[mask].mean()) if n else None,
                count=n,
            )
        )
    return out


def expected_calibration_error(
    probs: Sequence[ProbRow], targets: Sequence[Label], n_bins: int = 10, labels: Sequence[Label] | None = None
) -> float:
    """Top-label ECE with ``n_bins`` equal-width bins (Guo et al. 2017); see the module docstring."""
    bins = reliability_bins(probs, targets, n_bins, labels)
    total = sum(b.count for b in bins)
    return sum(b.count / total * abs(b.accuracy - b.confidence) for b in bins if b.count)  # type: ignore[operator]


def brier_score(probs: Sequence[ProbRow], targets: Sequence[Label], labels: Sequence[Label] | None = None) -> float:
    """Multi-class Brier score in [0, 2]: mean over items of the squared distance to the one-hot target."""
    _, p, y = _prob_matrix(probs, targets, labels)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return float(((p - onehot) ** 2).sum(axis=1).mean())


def reliability_diagram_svg(bins: Sequence[ReliabilityBin], title: str = "Reliability diagram") -> str:
    """Render reliability-bin data as a self-contained SVG string.

    Uses matplotlib's object API with the SVG canvas (never pyplot), so it neither needs a display nor touches
    the global backend another part of the program may have chosen. Output is deterministic for equal input
    (fixed hash salt, no date metadata), so reports diff cleanly.
    """
    import matplotlib
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    with matplotlib.rc_context({"svg.hashsalt": "tuneforge", "svg.fonttype": "none"}):
        fig = Figure(figsize=(4.5, 4.5))
        FigureCanvasSVG(fig)
        ax = fig.add_subplot(1, 1, 1)
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
        filled = [b for b in bins if b.count]
        ax.bar(
            [(b.lower + b.upper) / 2 for b in filled],
            [b.accuracy for b in filled],
            width=[b.upper - b.lower for b in filled],
            edgecolor="black",
            alpha=0.7,
            label="accuracy",
        )
        ax.plot([b.confidence for b in filled], [b.accuracy for b in filled], "o", color="black", markersize=3,
                label="mean confidence")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title(title)
        ax.legend(loc="upper left", fontsize="small")
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


# ------------------------------------------------------------------------------------ distributions and collapse
def label_distribution(values: Sequence[Label], labels: Sequence[Label]) -> dict[Label, int]:
    """Count of each label (every label in `labels` present, zeros included), then any other value seen."""
    counts = {label: 0 for label in labels}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def collapse_check(predictions: Sequence[Label], targets: Sequence[Label]) -> dict:
    """Whether the model answers (nearly) one label whatever the item: the most predicted label's share of the
    items, and that label's share of the references. `collapsed` when the first is above COLLAPSE_SHARE and beats
    the second by more than COLLAPSE_EXCESS (a model predicting 'a' for 90% of items whose references are 85% 'a'
    has not collapsed)."""
    _check_pairs(predictions, targets)
    counts = label_distribution(predictions, [])
    top = max(counts, key=lambda label: (counts[label], -list(counts).index(label)))
    share = counts[top] / len(predictions)
    reference_share = sum(t == top for t in targets) / len(targets)
    return {"label": top, "share": share, "reference_share": reference_share,
            "collapsed": share > COLLAPSE_SHARE and share - reference_share > COLLAPSE_EXCESS}


# ------------------------------------------------------------------------------------------- selective prediction
def selective_prediction(probs: Sequence[ProbRow], targets: Sequence[Label], labels: Sequence[Label] | None = None,
                         thresholds: Sequence[float] = SELECTIVE_THRESHOLDS) -> dict:
    """Accuracy vs coverage when the model abstains below a top-label confidence threshold.

    - `thresholds`: per threshold t, coverage = share of items with confidence >= t, accuracy over those items
      (None when none is answered).
    - `curve`: items by confidence, highest first (ties in input order); point k is (k/N, accuracy of the k most
      confident). `auc` is the mean of those N accuracies, the area under the step accuracy-coverage curve: 1.0
      when every answer is right, the plain accuracy when confidence carries no information (in expectation),
      higher when the confident answers are the right ones.
    """
    _, p, y = _prob_matrix(probs, targets, labels)
    confidence, correct = _top_label(p, y)
    order = sorted(range(len(confidence)), key=lambda i: (-confidence[i], i))
    hits = np.cumsum(correct[order])
    counts = np.arange(1, len(order) + 1)
    accuracies = hits / counts
    table = []
    for t in thresholds:
        kept = confidence >= t
        n = int(kept.sum())
        table.append({"threshold": float(t), "coverage": n / len(confidence),
                      "accuracy": float(correct[kept].mean()) if n else None, "answered": n})
    return {"thresholds": table, "auc": float(accuracies.mean()),
            "curve": [[float(c / len(order)), float(a)] for c, a in zip(counts, accuracies)]}
