"""Task metrics against hand-worked values."""
from __future__ import annotations

import pytest

from tuneforge.errors import ConfigError
from tuneforge.eval import registry
from tuneforge.eval.metrics import exact_match, json_field_accuracy, normalize_text


def test_normalize_text_strips_and_collapses_whitespace_only():
    assert normalize_text("  Hello,\n\t  World!  ") == "Hello, World!"
    assert normalize_text("") == ""
    assert normalize_text("Case Stays") == "Case Stays"


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("Paris", "Paris", 1.0),
        ("  Paris \n", "Paris", 1.0),
        ("New   York", "New York", 1.0),
        ("paris", "Paris", 0.0),
        ("Paris.", "Paris", 0.0),
        ("", "", 1.0),
    ],
)
def test_exact_match(prediction, reference, expected):
    assert exact_match(prediction, reference) == expected


REFERENCE = '{"name": "Ada Lovelace", "age": 36, "active": true, "tags": ["math", "poet"]}'


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        (REFERENCE, 1.0),
        # whitespace inside string values and around the object is forgiven
        ('\n {"name": "Ada   Lovelace", "age": 36, "active": true, "tags": ["math", "poet"]}  ', 1.0),
        # key order does not matter; extra keys give nothing
        ('{"tags": ["math", "poet"], "active": true, "age": 36, "name": "Ada Lovelace", "x": 1}', 1.0),
        # 3 of 4: wrong age
        ('{"name": "Ada Lovelace", "age": 37, "active": true, "tags": ["math", "poet"]}', 0.75),
        # 2 of 4: age missing, list order wrong
        ('{"name": "Ada Lovelace", "active": true, "tags": ["poet", "math"]}', 0.5),
        # 1 == 1.0 in JSON, but 1 is not true: age right, active wrong, tags wrong length, name case differs
        ('{"name": "ada lovelace", "age": 36.0, "active": 1, "tags": ["math"]}', 0.25),
        # a number where a string is expected is wrong
        ('{"name": 36, "age": "36", "active": "true", "tags": "math poet"}', 0.0),
        # not one JSON object: fenced, prose around it, array, invalid, empty
        ('```json\n' + REFERENCE + '\n```', 0.0),
        ("Here it is: " + REFERENCE, 0.0),
        ("[" + REFERENCE + "]", 0.0),
        ('{"name": "Ada Lovelace",', 0.0),
        ("", 0.0),
    ],
)
def test_json_field_accuracy(prediction, expected):
    assert json_field_accuracy(prediction, REFERENCE) == pytest.approx(expected)


def test_json_field_accuracy_nested_objects_and_nulls():
    reference = '{"a": {"x": 1, "y": "b c"}, "b": null}'
    assert json_field_accuracy('{"a": {"y": "b  c", "x": 1}, "b": null}', reference) == 1.0
    assert json_field_accuracy('{"a": {"x": 1}, "b": 0}', reference) == 0.0
    assert json_field_accuracy('{"a": {"x": 1, "y": "b c", "z": 2}, "b": null}', reference) == 0.5


def test_json_field_accuracy_reference_must_be_an_object():
    with pytest.raises(ValueError, match="JSON object"):
        json_field_accuracy("{}", "[1, 2]")
    with pytest.raises(ValueError, match="parsing failed"):
        json_field_accuracy("{}", "not json")
    assert json_field_accuracy("{}", "{}") == 1.0
    assert json_field_accuracy("nope", "{}") == 0.0


def test_registry():
    assert registry.item_scorer("json_fields") is json_field_accuracy
    assert registry.item_scorer("exact_match") is exact_match
    with pytest.raises(ConfigError, match="unknown metric 'blue'"):
        registry.item_scorer("blue")
    with pytest.raises(ConfigError, match="label metric"):
        registry.item_scorer("macro_f1")
