"""Gate parsing (grammar, units, errors with line numbers) and evaluation against results."""
from __future__ import annotations

import pytest

from tuneforge.eval.gates import (
    GateFileError,
    ResultsError,
    evaluate_gates,
    known_metric_names,
    parse_gate,
    parse_gate_file,
)

RESULTS = {
    "models": {
        "base": {"summary": {"exact_match": 0.70, "rougeL": 0.30, "general_accuracy": 0.60, "perplexity": 14.0},
                 "slices": {"safety": {"refusal_rate": 0.90}}},
        "tuned": {"summary": {"exact_match": 0.80, "rougeL": 0.36, "general_accuracy": 0.585, "perplexity": 12.0},
                  "slices": {"safety": {"refusal_rate": 0.96}, "math": {"exact_match": 0.5}}},
    },
    "comparison": {"rougeL": {"delta": 0.06, "ci_low": 0.02, "ci_high": 0.10}},
}


def outcome(gate: str, results=RESULTS, **kw):
    (o,) = evaluate_gates(results, [gate], **kw)
    return o


@pytest.mark.parametrize(
    "gate, passed",
    [
        ("exact_match >= 0.8", True), ("exact_match > 0.8", False), ("exact_match <= 0.8", True),
        ("exact_match < 0.8", False), ("exact_match == 0.8", True), ("exact_match == 0.81", False),
        ("exact_match > 0.79", True), ("exact_match < 0.81", True), ("exact_match>=0.8", True),
    ],
)
def test_each_operator(gate, passed):
    assert outcome(gate).passed is passed


def test_float_noise_counts_as_equal():
    noisy = {"models": {"tuned": {"summary": {"exact_match": 0.7999999999999999}}}}
    assert outcome("exact_match >= 0.8", noisy).passed
    assert not outcome("exact_match < 0.8", noisy).passed


@pytest.mark.parametrize(
    "text, threshold, unit",
    [
        ("exact_match >= 0.8", 0.8, "fraction"),
        ("exact_match >= 80", 0.8, "pp"),  # |N| > 1 -> percentage points
        ("exact_match >= 80%", 0.8, "pp"),
        ("exact_match >= 0.5pp", 0.005, "pp"),  # explicit unit wins over the magnitude rule
        ("exact_match >= 1", 1.0, "fraction"),  # an absolute 1 is a perfect score
        ("rougeL delta_vs_base >= 5", 0.05, "pp"),
        ("rougeL delta_vs_base >= -2", -0.02, "pp"),
        ("rougeL delta_vs_base >= 0.5", 0.5, "fraction"),  # |N| <= 1 bare: a fraction, i.e. +50 points
        ("rougeL delta_vs_base >= 1 pp", 0.01, "pp"),
        ("perplexity <= 12.5", 12.5, "raw"),  # not a fraction metric: never rescaled
        ("latency_p95_ms < 800", 800.0, "raw"),
    ],
)
def test_percentage_point_rule(text, threshold, unit):
    g = parse_gate(text)
    assert g.threshold == pytest.approx(threshold) and g.unit == unit


@pytest.mark.parametrize(
    "text, message",
    [
        ("rougeL delta_vs_base >= 1", "ambiguous"),
        ("rougeL delta_vs_base >= -1", "ambiguous"),
        ("exact_match >= 150", "outside 0..100"),
        ("rougeL delta_vs_base >= -101", "outside -100..100"),
        ("exact_match >= -0.5", "cannot be negative"),
        ("perplexity <= 5pp", "only applies to fraction metrics"),
    ],
)
def test_unit_rule_rejects_ambiguous_or_impossible_thresholds(text, message):
    with pytest.raises(GateFileError, match=message):
        parse_gate(text)


def test_raw_metrics_declared_in_the_file_are_not_rescaled():
    (g,) = parse_gate_file("raw_metrics: [latency_p95]\ngates:\n  - latency_p95 < 1.5\n")
    assert (g.threshold, g.unit) == (1.5, "raw")


def test_delta_uses_comparison_and_reports_the_ci():
    o = outcome("rougeL delta_vs_base >= 5")
    assert o.passed and o.actual == pytest.approx(0.06)
    assert "CI [+0.0200" in o.reason
    assert not outcome("rougeL delta_vs_base >= 7").passed


def test_delta_falls_back_to_summaries_and_works_on_slices():
    o = outcome("general_accuracy delta_vs_base >= -2")  # 0.585 - 0.60 = -0.015 >= -0.02
    assert o.passed and o.actual == pytest.approx(-0.015)
    assert not outcome("general_accuracy delta_vs_base >= -1pp").passed
    o = outcome("refusal_rate delta_vs_base >= 5 on safety")  # 0.96 - 0.90
    assert o.passed and o.actual == pytest.approx(0.06)
    # Raw metric delta in its own units: 12 - 14 = -2.
    assert outcome("perplexity delta_vs_base <= -1.5").passed


def test_slices():
    assert outcome("refusal_rate >= 0.95 on safety").passed
    assert not outcome("refusal_rate >= 0.97 on safety").passed
    assert outcome("exact_match >= 0.5 on math").passed


@pytest.mark.parametrize(
    "gate, reason",
    [
        ("bleu >= 0.1", "metric 'bleu' missing from tuned summary"),
        ("refusal_rate >= 0.9 on jailbreak", "slice 'jailbreak' missing"),
        ("rougeL >= 0.1 on safety", "metric 'rougeL' missing from slice 'safety'"),
        ("exact_match delta_vs_base >= 1pp on math", "slice 'math' missing from base"),
    ],
)
def test_missing_data_fails_never_passes(gate, reason):
    o = outcome(gate)
    assert not o.passed and o.actual is None and reason in o.reason


def test_delta_without_base_or_comparison_fails():
    only = {"models": {"tuned": {"summary": {"exact_match": 0.9}}}}
    o = outcome("exact_match delta_vs_base >= 1pp", only)
    assert not o.passed and "needs a base model" in o.reason


def test_fraction_metric_stored_on_the_wrong_scale_fails():
    bad = {"models": {"tuned": {"summary": {"bleu": 35.2, "acc": None}}}}
    o = outcome("bleu >= 30", bad)
    assert not o.passed and "outside [0, 1]" in o.reason
    assert "not a finite number" in outcome("acc >= 0.5", bad).reason


def test_model_selection():
    single = {"models": {"mymodel": {"summary": {"exact_match": 0.9}}}}
    assert outcome("exact_match >= 0.85", single).passed
    assert not outcome("exact_match >= 0.75", RESULTS, model="base").passed
    with pytest.raises(ResultsError, match="none is named 'tuned'"):
        outcome("exact_match >= 0.5", {"models": {"a": {}, "b": {}}})
    with pytest.raises(ResultsError, match="no 'models'"):
        outcome("exact_match >= 0.5", {})


GATE_FILE = """\
# header comment
gates:
  - "exact_match >= 0.8"
  - {metric: refusal_rate, op: ">=", value: 0.95, on: safety}
  - metric: rougeL
    op: ">="
    value: 5pp
    delta_vs_base: true
"""


def test_gate_file_mixed_forms_with_line_numbers():
    gates = parse_gate_file(GATE_FILE)
    assert [g.lineno for g in gates] == [3, 4, 5]
    # `on:` is a boolean in YAML 1.1; the gate loader must keep it as the key "on".
    assert gates[1].on == "safety"
    assert gates[2].delta_vs_base and gates[2].threshold == pytest.approx(0.05)
    outcomes = evaluate_gates(RESULTS, gates)
    assert [o.passed for o in outcomes] == [True, True, True]
    assert outcomes[1].line.startswith("4: refusal_rate >= 0.95 on safety")


@pytest.mark.parametrize(
    "line, message",
    [
        ('"exact_match => 0.8"', r"gate line 4 .*unknown operator '=>'"),
        ('"exact_match != 0.8"', r"gate line 4 .*unknown operator '!='"),
        ('"exact_match >= eighty"', r"gate line 4 .*bad number 'eighty'"),
        ('"exact_match >="', r"gate line 4 .*missing threshold"),
        ('"exact_match"', r"gate line 4 .*missing operator"),
        ('"exact_match >= 0.8 for safety"', r"gate line 4 .*unexpected 'for safety'"),
        ('"exact_mach >= 0.8"', r"gate line 4 .*unknown metric 'exact_mach'"),
        ("{metric: exact_match, op: '>=', value: 0.8, slice: x}", r"gate line 4: unknown key"),
        ("{metric: exact_match, op: '>='}", r"gate line 4: missing key 'value'"),
        ("[1, 2]", r"gate line 4: expected a string or a mapping"),
    ],
)
def test_malformed_lines_name_the_line(line, message):
    text = f"# comment\n\ngates:\n  - {line}\n  - exact_match >= 0.5\n"
    with pytest.raises(GateFileError, match=message):
        parse_gate_file(text, known_metrics=known_metric_names(RESULTS))


def test_unknown_metric_suggests_close_names():
    with pytest.raises(GateFileError) as err:
        parse_gate_file("gates:\n  - exact_mach >= 0.8\n", known_metrics=known_metric_names(RESULTS))
    assert "exact_match" in (err.value.hint or "")


@pytest.mark.parametrize(
    "text, message",
    [
        ("gates: [", "line 1: invalid YAML"),
        ("- a >= 1", "expected a mapping with a 'gates:' list"),
        ("gates: []", "non-empty list"),
        ("gates: [exact_match >= 0.8]\nthresholds: 1", "unknown top-level key"),
    ],
)
def test_malformed_files(text, message):
    with pytest.raises(GateFileError, match=message):
        parse_gate_file(text)
