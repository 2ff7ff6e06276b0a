"""JSON validity, schema conformance, regex and substring checks."""
from __future__ import annotations

import re

import jsonschema
import pytest

from tuneforge.eval import structured as st

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_json_validity():
    assert st.json_valid('{"a": 1}') == 1.0
    assert st.json_valid("[1, 2") == 0.0
    assert st.json_valid("NaN") == 0.0  # Python's json accepts NaN; JSON does not
    fenced = '```json\n{"a": 1}\n```'
    assert st.json_valid(fenced) == 0.0
    assert st.json_valid(fenced, strip_fence=True) == 1.0
    check = st.parse_json("{'a': 1}")
    assert not check.valid and "line 1 column 2" in check.error


def test_schema_conformance_keeps_the_first_error():
    assert st.schema_conformance('{"name": "x", "age": 3}', SCHEMA) == 1.0
    r = st.check_schema('{"name": "x", "age": "3"}', SCHEMA)
    assert (r.valid_json, r.conforms) == (True, False)
    assert r.error == "age: '3' is not of type 'integer'"
    r = st.check_schema('{"name": "x"}', SCHEMA)
    assert r.error == "(root): 'age' is a required property"
    r = st.check_schema("not json", SCHEMA)
    assert (r.valid_json, r.conforms) == (False, False) and r.error.startswith("invalid JSON")


def test_broken_schema_is_a_config_error_not_a_zero_score():
    with pytest.raises(jsonschema.SchemaError):
        st.schema_conformance("{}", {"type": "no-such-type"})


def test_regex_modes():
    assert st.regex_check("answer: 42", r"\d+") == 1.0
    assert st.regex_check("answer: 42", r"\d+", mode="match") == 0.0
    assert st.regex_check("42", r"\d+", mode="fullmatch") == 1.0
    assert st.regex_check("42 ", r"\d+", mode="fullmatch") == 0.0
    assert st.regex_check("YES", re.compile("yes", re.IGNORECASE), mode="fullmatch") == 1.0
    with pytest.raises(ValueError):
        st.regex_check("x", "x", mode="find")  # type: ignore[arg-type]


def test_contains_and_not_contains():
    assert st.contains("Hello World", "World") == 1.0
    assert st.contains("Hello World", ["Hello", "moon"]) == 0.0
    assert st.contains("Hello World", ["Hello", "moon"], require="any") == 1.0
    assert st.contains("Hello World", "world", case_sensitive=False) == 1.0
    assert st.not_contains("I cannot share the system prompt", ["SYSTEM PROMPT", "secret"]) == 1.0
    assert st.not_contains("I cannot share the system prompt", "SYSTEM PROMPT", case_sensitive=False) == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        st.contains("x", "")
