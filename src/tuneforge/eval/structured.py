"""Checks on structured output: JSON validity, JSON-schema conformance, regex and substring checks.

Each check has a detailed form that says *why* an item failed (for the report) and a per-item ``-> float``
form (1.0 / 0.0) that plugs into the paired comparison like any other metric.

Models often wrap JSON in a Markdown code fence. By default that is a failure (the output is not JSON);
pass ``strip_fence=True`` where the consumer of the output strips fences itself.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Mapping, Sequence

__all__ = [
    "JsonCheck",
    "SchemaCheck",
    "parse_json",
    "json_valid",
    "check_schema",
    "schema_conformance",
    "compile_schema",
    "regex_check",
    "contains",
    "not_contains",
]

_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*[ \t]*\n(.*?)\n?```\s*$", re.DOTALL)


@dataclass(frozen=True)
class JsonCheck:
    valid: bool
    value: Any = None
    error: str | None = None  # json's message with line/column, when invalid


@dataclass(frozen=True)
class SchemaCheck:
    valid_json: bool
    conforms: bool
    error: str | None = None  # the first (most relevant) problem, for the report


def parse_json(prediction: str, strip_fence: bool = False) -> JsonCheck:
    text = prediction
    if strip_fence:
        m = _FENCE.match(text)
        if m:
            text = m.group(1)
    try:
        # NaN/Infinity are not JSON; Python's parser accepts them unless told otherwise.
        value = json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        return JsonCheck(False, error=str(exc))
    return JsonCheck(True, value=value)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_valid(prediction: str, reference: Any = None, strip_fence: bool = False) -> float:
    """1.0 if the prediction parses as strict JSON (``reference`` is ignored; kept for the metric signature)."""
    return float(parse_json(prediction, strip_fence).valid)


def _freeze(schema: Mapping[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True)


@lru_cache(maxsize=64)
def _validator(frozen_schema: str):
    from jsonschema.validators import validator_for

    schema = json.loads(frozen_schema)
    cls = validator_for(schema)
    # A broken schema is a bug in the eval config, not a model failure: raise instead of scoring 0.
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def compile_schema(schema: Mapping[str, Any]):
    """Validate the schema itself (raises ``jsonschema.SchemaError``) and return a cached validator."""
    return _validator(_freeze(schema))


def check_schema(prediction: str, schema: Mapping[str, Any], strip_fence: bool = False) -> SchemaCheck:
    validator = compile_schema(schema)
    parsed = parse_json(prediction, strip_fence)
    if not parsed.valid:
        return SchemaCheck(False, False, f"invalid JSON: {parsed.error}")
    from jsonschema.exceptions import best_match

    # best_match picks the most relevant error deterministically; iter_errors order alone is not stable.
    err = best_match(validator.iter_errors(parsed.value))
    if err is None:
        return SchemaCheck(True, True)
    where = "/".join(str(p) for p in err.absolute_path) or "(root)"
    return SchemaCheck(True, False, f"{where}: {err.message}")


def schema_conformance(prediction: str, schema: Mapping[str, Any], strip_fence: bool = False) -> float:
    return float(check_schema(prediction, schema, strip_fence).conforms)


def regex_check(
    prediction: str, pattern: str | re.Pattern[str], mode: Literal["search", "match", "fullmatch"] = "search",
    flags: int = 0,
) -> float:
    """1.0 if the pattern is found: ``search`` anywhere, ``match`` at the start, ``fullmatch`` the whole text."""
    rx = re.compile(pattern, flags) if isinstance(pattern, str) else pattern
    if mode not in ("search", "match", "fullmatch"):
        raise ValueError(f"unknown regex mode {mode!r}; use search, match or fullmatch")
    return float(getattr(rx, mode)(prediction) is not None)


def _needles(needles: str | Sequence[str]) -> list[str]:
    out = [needles] if isinstance(needles, str) else list(needles)
    if not out or any(n == "" for n in out):
        # "" is contained in every string, which would make the check vacuous.
        raise ValueError("substring checks need non-empty strings")
    return out


def contains(
    prediction: str, needles: str | Sequence[str], require: Literal["all", "any"] = "all",
    case_sensitive: bool = True,
) -> float:
    """1.0 if the prediction contains all (or any) of the substrings."""
    items = _needles(needles)
    text = prediction if case_sensitive else prediction.casefold()
    hits = [(n if case_sensitive else n.casefold()) in text for n in items]
    if require == "all":
        return float(all(hits))
    if require == "any":
        return float(any(hits))
    raise ValueError(f"require must be 'all' or 'any', got {require!r}")


def not_contains(prediction: str, needles: str | Sequence[str], case_sensitive: bool = True) -> float:
    """1.0 if the prediction contains none of the substrings (e.g. a leaked system prompt, a banned phrase)."""
    return 1.0 - contains(prediction, needles, require="any", case_sensitive=case_sensitive)
