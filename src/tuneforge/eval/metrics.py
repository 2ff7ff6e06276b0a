"""Task metrics on generated answers: each maps (prediction, reference) to a score in [0, 1].

Scores are per item so that the paired bootstrap can resample items; a run's headline number is their mean.
Predictions are scored as the model wrote them: no markdown fences are stripped and no JSON is repaired, because a
consumer of the tuned model would receive exactly that text. Only surrounding and repeated whitespace is forgiven,
since it carries no meaning in either metric's task and tokenizers differ in how they emit it.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

_WHITESPACE = re.compile(r"\s+")


def normalize_text(s: str) -> str:
    """Strip the ends and collapse every run of whitespace (spaces, tabs, newlines) to one space.

    Case and punctuation are kept: in the tasks this toolkit targets ("status": "Open" vs "open") they can be the
    difference between a right and a wrong answer.
    """
    return _WHITESPACE.sub(" ", s).strip()


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when prediction and reference are equal after `normalize_text`, else 0.0."""
    return 1.0 if normalize_text(prediction) == normalize_text(reference) else 0.0


def _values_equal(predicted: Any, expected: Any) -> bool:
    """JSON value equality with the type distinctions Python's `==` blurs.

    `True == 1` and `1 == 1.0` in Python; JSON does distinguish booleans from numbers (but not 1 from 1.0), so a
    model answering `1` for `true` is wrong while `1.0` for `1` is right.
    """
    if isinstance(expected, str):
        return isinstance(predicted, str) and normalize_text(predicted) == normalize_text(expected)
    if isinstance(expected, bool) or isinstance(predicted, bool):
        return isinstance(expected, bool) and isinstance(predicted, bool) and expected is predicted
    if isinstance(expected, (int, float)):
        if not isinstance(predicted, (int, float)):
            return False
        if isinstance(expected, float) and math.isnan(expected):
            return isinstance(predicted, float) and math.isnan(predicted)
        return predicted == expected
    if expected is None:
        return predicted is None
    if isinstance(expected, list):
        return (
            isinstance(predicted, list)
            and len(predicted) == len(expected)
            and all(_values_equal(p, e) for p, e in zip(predicted, expected))
        )
    if isinstance(expected, dict):
        return (
            isinstance(predicted, dict)
            and predicted.keys() == expected.keys()
            and all(_values_equal(predicted[key], value) for key, value in expected.items())
        )
    return predicted == expected


def _reference_object(reference: str) -> dict:
    try:
        expected = json.loads(reference)
    except json.JSONDecodeError as exc:
        raise ValueError(f"json_fields needs a JSON object as the reference; parsing failed: {exc}") from exc
    if not isinstance(expected, dict):
        raise ValueError(f"json_fields needs a JSON object as the reference, got {type(expected).__name__}")
    return expected


def json_field_diff(prediction: str, reference: str) -> dict[str, list[str]] | None:
    """The reference object's top-level keys split into correct / wrong / missing, plus the prediction's extra keys,
    by the rules of `json_field_accuracy`; None when the prediction is not exactly one JSON object."""
    expected = _reference_object(reference)
    try:
        predicted = json.loads(prediction.strip())
    except json.JSONDecodeError:
        return None
    if not isinstance(predicted, dict):
        return None
    diff: dict[str, list[str]] = {"correct": [], "wrong": [], "missing": [],
                                  "extra": [key for key in predicted if key not in expected]}
    for key, value in expected.items():
        if key not in predicted:
            diff["missing"].append(key)
        else:
            diff["correct" if _values_equal(predicted[key], value) else "wrong"].append(key)
    return diff


def json_field_accuracy(prediction: str, reference: str) -> float:
    """Share of the reference object's top-level keys whose values the prediction's object reproduces.

    - The reference must be a JSON object; anything else is a dataset error and raises `ValueError`.
    - A prediction that is not, after stripping surrounding whitespace, exactly one JSON object scores 0.0
      (prose around it, markdown fences or a JSON array included).
    - Extra keys in the prediction earn nothing and cost nothing; a missing key counts as wrong.
    - Strings compare after `normalize_text`; nested objects and arrays must match in full, by the same rules.
    - An empty reference object scores 1.0 for any predicted object (there is nothing to get wrong) and 0.0 otherwise.
    """
    diff = json_field_diff(prediction, reference)
    if diff is None:
        return 0.0
    total = len(diff["correct"]) + len(diff["wrong"]) + len(diff["missing"])
    return len(diff["correct"]) / total if total else 1.0
