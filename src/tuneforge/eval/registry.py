"""One registry over every metric module, so a task YAML, the CLI and the gates share one set of names.

Two kinds of metric:

* **item** metrics map (prediction, reference) -> a score in [0, 1] for one generated answer. They are paired
  across models item by item (bootstrap, McNemar / permutation) and averaged per slice.
* **label** metrics (accuracy, macro_f1, ece, brier) are computed over a whole label task by
  `tuneforge.eval.labels`; only `accuracy` also has a per-item score (correct or not) to pair.

Two exact-match names, on purpose, because they answer different questions:

* ``exact_match`` (from `eval.metrics`): equal after collapsing whitespace only. Case and punctuation count -
  the right metric for structured answers ("Open" vs "open", a JSON string) where they change the meaning.
* ``exact_match_norm`` (from `eval.text_metrics`): SQuAD-normalised (lowercase, punctuation and articles
  removed). The right metric for short free-text answers ("The Eiffel Tower." == "eiffel tower").
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from tuneforge.errors import ConfigError
from tuneforge.eval import metrics as core_metrics
from tuneforge.eval import structured, text_metrics


@dataclass(frozen=True)
class MetricInfo:
    name: str
    kind: str  # "item" or "label"
    description: str
    fn: Callable[[str, str], float] | None = None


def _contains_answer(prediction: str, reference: str) -> float:
    """1.0 when the SQuAD-normalised reference occurs as whole words in the normalised prediction.

    For short-answer questions put to chat models, which rarely answer with the bare answer ("The capital is
    Paris."); exact match would score that 0.
    """
    ref = text_metrics.normalize_text(reference)
    if not ref:
        return 0.0
    pred = text_metrics.normalize_text(prediction)
    return 1.0 if re.search(rf"(?:^|\s){re.escape(ref)}(?:\s|$)", pred) else 0.0


def _regex_ref(prediction: str, reference: str) -> float:
    """The reference field is a regular expression the answer must match (searched, not anchored)."""
    return float(structured.regex_check(prediction, reference))


def _contains_ref(prediction: str, reference: str) -> float:
    return float(structured.contains(prediction, reference))


def _json_valid(prediction: str, reference: str) -> float:
    return float(structured.json_valid(prediction))


_ITEM: list[tuple[str, Callable[[str, str], float], str]] = [
    ("exact_match", core_metrics.exact_match, "equal after whitespace normalisation (case and punctuation count)"),
    ("exact_match_norm", text_metrics.exact_match, "SQuAD-normalised exact match (case, punctuation, articles ignored)"),
    ("json_fields", core_metrics.json_field_accuracy, "share of the reference JSON object's keys reproduced"),
    ("json_valid", _json_valid, "the answer parses as JSON"),
    ("token_f1", text_metrics.token_f1, "SQuAD token F1"),
    ("rouge1", text_metrics.rouge1, "ROUGE-1 F"),
    ("rouge2", text_metrics.rouge2, "ROUGE-2 F"),
    ("rougeL", text_metrics.rougeL, "ROUGE-L F"),
    ("bleu", text_metrics.sentence_bleu, "sentence BLEU / 100 (for pairing; corpus BLEU is reported beside it)"),
    ("chrf", text_metrics.sentence_chrf, "sentence chrF / 100"),
    ("contains_answer", _contains_answer, "normalised reference appears as whole words in the normalised answer"),
    ("contains", _contains_ref, "the reference string appears verbatim in the answer"),
    ("regex", _regex_ref, "the reference is a regular expression the answer matches"),
]

REGISTRY: dict[str, MetricInfo] = {name: MetricInfo(name, "item", desc, fn) for name, fn, desc in _ITEM}
REGISTRY.update({
    "accuracy": MetricInfo("accuracy", "label", "share of items whose most probable label is the reference"),
    "macro_f1": MetricInfo("macro_f1", "label", "F1 averaged over labels (rare labels count as much as common)"),
    "ece": MetricInfo("ece", "label", "expected calibration error, 10 bins, from label-token probabilities"),
    "brier": MetricInfo("brier", "label", "multi-class Brier score in [0, 2], from label-token probabilities"),
})

#: Label metrics that have a per-item score (and so a paired comparison).
LABEL_ITEM_METRICS = ("accuracy",)
#: Names that stand for several metrics (config `eval.metric`, `tuneforge eval --metric`); the first is the headline.
METRIC_SETS = {"exact_match": ["exact_match"], "json_fields": ["json_fields"], "both": ["json_fields", "exact_match"]}


def get(name: str) -> MetricInfo:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown metric {name!r}", hint=f"known metrics: {', '.join(sorted(REGISTRY))}") from None


def item_scorer(name: str) -> Callable[[str, str], float]:
    info = get(name)
    if info.fn is None:
        raise ConfigError(f"metric {name!r} is a label metric; it needs a task with 'labels:'",
                          hint="item metrics: " + ", ".join(n for n, m in REGISTRY.items() if m.kind == "item"))
    return info.fn


def split_metrics(names: list[str]) -> tuple[list[str], list[str]]:
    """(item metrics, label metrics), each in the order given; unknown names raise ConfigError."""
    items, labels = [], []
    for name in names:
        (items if get(name).kind == "item" else labels).append(name)
    return items, labels
