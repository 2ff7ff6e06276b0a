"""Release gates: threshold checks on an evaluation's results that decide whether a tuned model ships.

Gate file (YAML)::

    gates:
      - "exact_match >= 0.8"                      # absolute, on the overall summary
      - "rougeL delta_vs_base >= 5"               # tuned minus base, 5 percentage points
      - "json_fields delta_vs_base ci_low >= 0"   # the 95% interval of the delta lies above zero
      - "refusal_rate >= 0.95 on safety"          # on one slice
      - {metric: general_accuracy, op: ">=", value: -2, delta_vs_base: true}
    raw_metrics: [latency_p95_ms]                 # optional: metrics NOT stored as fractions

Text grammar: ``METRIC [delta_vs_base [ci_low|ci_high]] OP NUMBER[pp|%] [on SLICE]``, OP one of ``>= > <= < ==``.
``ci_low``/``ci_high`` gate the paired confidence interval of the delta instead of its point estimate (mapping
form: ``stat: ci_low``); they need the results' ``comparison`` entry for the metric.

Metric names come from the one registry (`tuneforge.eval.registry`) plus whatever the results hold. A name the
registry does not know and the results do not mention is an error (exit 2); a known metric absent from the
results FAILS its gate (exit 1), and the reason says what produces it. The registry's parametrised families count
as known: ``pass@5``, ``cohort_gap:exact_match`` (``tuneforge eval --cohort-field``); so do its fairness and human
metrics, ``counterfactual_flip_rate <= 0.05`` and ``human_win_rate >= 0.6``, read from the summary like any other.

Units (the one rule)
--------------------
tuneforge stores every bounded metric as a fraction in [0, 1] (accuracy 0.85, not 85). For such a metric a
threshold is read like this, whether the gate is absolute or ``delta_vs_base``:

1. ``5pp`` or ``5%`` (explicit unit): percentage points, i.e. 0.05.
2. A bare number with ``|N| > 1``: percentage points (``>= 85`` means 0.85; ``delta_vs_base >= -2`` means
   -0.02). A fraction, or a difference of two fractions, can never exceed 1 in size, so no other reading exists.
3. A bare number with ``|N| <= 1``: a fraction as written (``>= 0.8``; ``delta_vs_base >= 0.5`` is +50 pp).
4. A bare ``1`` or ``-1`` on a ``delta_vs_base`` gate is rejected as ambiguous (one point, or the whole
   scale?); write ``1pp``, or ``100pp`` for the whole scale.

So every accepted threshold has exactly one meaning. Metrics that are not fractions (perplexity, loss,
latency, lengths; see ``RAW_METRIC_NAMES``/``RAW_METRIC_SUFFIXES``, extendable per file with ``raw_metrics``)
take thresholds in their own units, never rescaled, and reject ``pp``/``%``. A fraction metric whose stored
value lies outside [0, 1] fails its gate with a reason instead of being compared on the wrong scale.

Comparisons treat values within 1e-9 as equal, so an accuracy of 0.7999999999999999 (float noise) passes
``>= 0.8`` and ``==`` is usable on computed numbers.

Results input
-------------
The evaluator's ``eval/results.json``::

    {"models": {"base": {"summary": {m: v}, "slices": {s: {m: v}}}, "tuned": {...}},
     "comparison": {m: {"delta": .., "ci_low": .., "ci_high": ..}}}

The gated model is ``tuned`` if present, else the only model (or the one named explicitly). A
``delta_vs_base`` gate on the summary uses ``comparison[m]["delta"]`` (tuned minus base, in the metric's units)
and falls back to tuned minus base summaries; on a slice it uses the two models' slice values. Anything
missing (metric, slice, base model) makes the gate FAIL with a reason; a gate never passes for lack of data.
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, Sequence

import yaml

from tuneforge.errors import TuneforgeError

__all__ = [
    "Gate",
    "GateOutcome",
    "GateFileError",
    "ResultsError",
    "parse_gate",
    "parse_gate_file",
    "load_gate_file",
    "evaluate_gates",
    "select_models",
    "known_metric_names",
    "metric_scale",
    "OPERATORS",
]

OPERATORS = (">=", ">", "<=", "<", "==")
_EQ_TOL = 1e-9
_GATE_KEYS = {"metric", "op", "value", "delta_vs_base", "stat", "on"}
_STATS = ("delta", "ci_low", "ci_high")
_FILE_KEYS = {"gates", "raw_metrics"}
_METRIC_NAME = re.compile(r"^[A-Za-z_][\w.\-/@:]*$")  # ':' for families such as cohort_gap:exact_match
_OP_SPLIT = re.compile(r"(>=|<=|==|=>|=<|!=|<>|>|<|=)")
_NUMBER = re.compile(r"^(?P<num>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?P<unit>pp|%)?$")

#: For metrics the registry does not know (a user's own results): names and suffixes read as not being fractions
#: in [0, 1], so their thresholds stay in their own units. Registered metrics carry their scale in the registry.
RAW_METRIC_NAMES = frozenset({"ppl", "loss", "nll", "mean_length", "avg_length", "tokens_per_second", "throughput"})
RAW_METRIC_SUFFIXES = ("_ms", "_s", "_seconds", "_tokens", "_chars", "_length", "_loss", "_perplexity", "_count")


class _GateLoader(yaml.SafeLoader):
    """SafeLoader where only true/false are booleans.

    YAML 1.1 (PyYAML's dialect) also reads on/off/yes/no as booleans, which would turn the structured gate key
    ``on:`` into ``True`` and a slice called ``no`` into ``False``.
    """


_GateLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_GateLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class GateFileError(TuneforgeError):
    """The gate file is unreadable or a gate line is malformed (the CLI exits 2)."""

    exit_code = 2


class ResultsError(TuneforgeError):
    """The results file cannot be gated at all (e.g. no model to gate). The CLI exits 2."""

    exit_code = 2


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    value: float  # as written in the file
    threshold: float  # in the metric's stored units, after the unit rule
    unit: Literal["fraction", "pp", "raw"]  # how `value` was read
    delta_vs_base: bool = False
    on: str | None = None  # slice name
    lineno: int = 0  # 1-based line in the gate file; 0 when built in code
    text: str = ""
    stat: Literal["delta", "ci_low", "ci_high"] = "delta"  # delta gates: the point estimate or an interval end

    def describe(self) -> str:
        return self.text or _render(self)


@dataclass(frozen=True)
class GateOutcome:
    line: str  # the gate as written, prefixed with its line number when it came from a file
    passed: bool
    actual: float | None  # the compared value in stored units (a delta for delta gates); None if missing
    reason: str
    gate: Gate | None = None


def _render(g: Gate) -> str:
    parts = [g.metric] + (["delta_vs_base"] if g.delta_vs_base else []) + ([g.stat] if g.stat != "delta" else [])
    parts += [g.op, f"{g.value:g}"]
    if g.unit == "pp" and abs(g.value) <= 1:
        parts[-1] += "pp"
    return " ".join(parts + ([f"on {g.on}"] if g.on else []))


# ------------------------------------------------------------------------------------------------------ units
def metric_scale(metric: str, raw_metrics: Iterable[str] = ()) -> Literal["fraction", "raw"]:
    from tuneforge.eval.registry import is_fraction

    name = metric.lower()
    registered = is_fraction(metric)
    if registered is not None and metric not in set(raw_metrics):
        return "fraction" if registered else "raw"
    if metric in set(raw_metrics) or name in RAW_METRIC_NAMES or name.endswith(RAW_METRIC_SUFFIXES):
        return "raw"
    return "fraction"


def _read_threshold(value: float, explicit_pp: bool, delta: bool, scale: str, where: str) -> tuple[float, str]:
    if scale == "raw":
        if explicit_pp:
            raise GateFileError(f"{where}: 'pp'/'%' only applies to fraction metrics; this metric is raw")
        return value, "raw"
    if explicit_pp or abs(value) > 1:
        limit = 100
        if abs(value) > limit or (not delta and value < 0):
            span = "-100..100" if delta else "0..100"
            raise GateFileError(f"{where}: {value:g} percentage points is outside {span}")
        return value / 100.0, "pp"
    if delta and abs(value) == 1:
        raise GateFileError(
            f"{where}: a bare {value:g} on a delta_vs_base gate is ambiguous",
            hint=f"write {value:g}pp for one percentage point, or {value * 100:g}pp for the whole scale",
        )
    if not delta and value < 0:
        raise GateFileError(f"{where}: a fraction metric cannot be negative ({value:g})")
    return value, "fraction"


# ---------------------------------------------------------------------------------------------------- parsing
def _check_metric(metric: str, where: str, known: Iterable[str] | None) -> None:
    if not _METRIC_NAME.match(metric):
        raise GateFileError(f"{where}: {metric!r} is not a metric name")
    if known is not None:
        from tuneforge.eval.registry import resolve

        names = set(known)
        if metric not in names and resolve(metric) is None:
            close = difflib.get_close_matches(metric, sorted(names), n=3)
            raise GateFileError(
                f"{where}: unknown metric {metric!r}",
                hint=(f"did you mean {', '.join(close)}?" if close
                      else "it is neither a tuneforge metric nor in the results"),
            )


def _parse_number(token: str, where: str) -> tuple[float, bool]:
    m = _NUMBER.match(token)
    if not m:
        raise GateFileError(f"{where}: bad number {token!r}", hint="write e.g. 0.8, 85, 5pp or -2%")
    return float(m.group("num")), m.group("unit") is not None


def _parse_text(text: str, lineno: int, known: Iterable[str] | None, raw: Iterable[str]) -> Gate:
    where = f"gate line {lineno} ({text.strip()!r})" if lineno else f"gate {text.strip()!r}"
    tokens = _OP_SPLIT.sub(r" \1 ", text).split()
    if not tokens:
        raise GateFileError(f"{where}: empty gate")
    metric, i = tokens[0], 1
    delta = len(tokens) > 1 and tokens[1] == "delta_vs_base"
    i += delta
    stat = "delta"
    if delta and i < len(tokens) and tokens[i] in _STATS:
        stat, i = tokens[i], i + 1
    elif i < len(tokens) and tokens[i] in _STATS[1:]:
        raise GateFileError(f"{where}: {tokens[i]} needs delta_vs_base before it",
                            hint=f"write '{metric} delta_vs_base {tokens[i]} >= 0'")
    if i >= len(tokens):
        raise GateFileError(f"{where}: missing operator", hint=f"use one of {' '.join(OPERATORS)}")
    op = tokens[i]
    if op not in OPERATORS:
        raise GateFileError(f"{where}: unknown operator {op!r}", hint=f"use one of {' '.join(OPERATORS)}")
    if i + 1 >= len(tokens):
        raise GateFileError(f"{where}: missing threshold after {op!r}")
    number, i = tokens[i + 1], i + 2
    if i < len(tokens) and tokens[i] in ("pp", "%"):
        number, i = number + tokens[i], i + 1
    value, explicit_pp = _parse_number(number, where)
    on = None
    if i < len(tokens):
        if tokens[i] != "on" or i + 2 != len(tokens):
            raise GateFileError(f"{where}: unexpected {' '.join(tokens[i:])!r}",
                                hint="the only suffix allowed is 'on SLICE'")
        on = tokens[i + 1]
    _check_metric(metric, where, known)
    threshold, unit = _read_threshold(value, explicit_pp, delta, metric_scale(metric, raw), where)
    return Gate(metric, op, value, threshold, unit, delta, on, lineno, text.strip(), stat)  # type: ignore[arg-type]


def _parse_mapping(spec: Mapping[str, Any], lineno: int, known: Iterable[str] | None, raw: Iterable[str]) -> Gate:
    where = f"gate line {lineno}" if lineno else "gate"
    extra = set(spec) - _GATE_KEYS
    if extra:
        raise GateFileError(f"{where}: unknown key(s) {sorted(extra)}", hint=f"allowed: {sorted(_GATE_KEYS)}")
    for key in ("metric", "op", "value"):
        if key not in spec:
            raise GateFileError(f"{where}: missing key {key!r}")
    metric, op, value = spec["metric"], spec["op"], spec["value"]
    if not isinstance(metric, str):
        raise GateFileError(f"{where}: metric must be a string")
    if op not in OPERATORS:
        raise GateFileError(f"{where}: unknown operator {op!r}", hint=f"use one of {' '.join(OPERATORS)}")
    delta = spec.get("delta_vs_base", False)
    if not isinstance(delta, bool):
        raise GateFileError(f"{where}: delta_vs_base must be true or false")
    stat = spec.get("stat", "delta")
    if stat not in _STATS or (stat != "delta" and not delta):
        raise GateFileError(f"{where}: stat must be one of {', '.join(_STATS)} and needs delta_vs_base: true")
    on = spec.get("on")
    if on is not None and not isinstance(on, str):
        raise GateFileError(f"{where}: 'on' must be a slice name")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise GateFileError(f"{where}: bad number {value!r}")
    number, explicit_pp = _parse_number(str(value).replace(" ", ""), where)
    _check_metric(metric, where, known)
    threshold, unit = _read_threshold(number, explicit_pp, delta, metric_scale(metric, raw), where)
    text = " ".join([metric] + (["delta_vs_base"] if delta else []) + ([stat] if stat != "delta" else [])
                    + [op, str(value)] + ([f"on {on}"] if on else []))
    return Gate(metric, op, number, threshold, unit, delta, on, lineno, text, stat)  # type: ignore[arg-type]


def parse_gate(
    spec: str | Mapping[str, Any], lineno: int = 0, known_metrics: Iterable[str] | None = None,
    raw_metrics: Iterable[str] = (),
) -> Gate:
    """Parse one gate, text or mapping form. ``known_metrics`` (if given) turns unknown names into errors."""
    if isinstance(spec, str):
        return _parse_text(spec, lineno, known_metrics, raw_metrics)
    if isinstance(spec, Mapping):
        return _parse_mapping(spec, lineno, known_metrics, raw_metrics)
    raise GateFileError(f"gate line {lineno}: expected a string or a mapping, got {type(spec).__name__}")


def parse_gate_file(text: str, known_metrics: Iterable[str] | None = None, source: str = "gate file") -> list[Gate]:
    """Parse gate-file YAML; every error names the file line. Raises ``GateFileError``."""
    try:
        root = yaml.compose(text, Loader=_GateLoader)
        data = yaml.load(text, Loader=_GateLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        raise GateFileError(f"{source}{at}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict) or "gates" not in data:
        raise GateFileError(f"{source}: expected a mapping with a 'gates:' list")
    extra = set(data) - _FILE_KEYS
    if extra:
        raise GateFileError(f"{source}: unknown top-level key(s) {sorted(map(str, extra))}",
                            hint=f"allowed: {sorted(_FILE_KEYS)}")
    raw = data.get("raw_metrics") or []
    if not isinstance(raw, list) or not all(isinstance(r, str) for r in raw):
        raise GateFileError(f"{source}: raw_metrics must be a list of metric names")
    items = data["gates"]
    if not isinstance(items, list) or not items:
        raise GateFileError(f"{source}: 'gates' must be a non-empty list")
    # The composed node tree carries source positions that safe_load discards; pair them up by index.
    seq = next(v for k, v in root.value if k.value == "gates")
    known = None if known_metrics is None else set(known_metrics) | set(raw)
    gates = [
        parse_gate(item, node.start_mark.line + 1, known, raw) for item, node in zip(items, seq.value)
    ]
    return gates


def load_gate_file(path, known_metrics: Iterable[str] | None = None) -> list[Gate]:
    from pathlib import Path

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise GateFileError(f"cannot read gate file {p}: {exc.strerror or exc}") from None
    return parse_gate_file(text, known_metrics, source=str(p))


# ------------------------------------------------------------------------------------------------- evaluation
def select_models(results: Mapping[str, Any], model: str | None = None,
                  base: str | None = None) -> tuple[str, str | None]:
    models = results.get("models") if isinstance(results, Mapping) else None
    if not isinstance(models, Mapping) or not models:
        raise ResultsError("results have no 'models' section", hint="pass the eval/results.json the evaluator wrote")
    if model is None:
        if "tuned" in models:
            model = "tuned"
        elif len(models) == 1:
            model = next(iter(models))
        else:
            raise ResultsError(f"several models {sorted(models)} and none is named 'tuned'",
                               hint="choose one with --model")
    elif model not in models:
        raise ResultsError(f"model {model!r} not in results (have {sorted(models)})")
    if base is None:
        base = "base" if "base" in models and model != "base" else None
    elif base not in models:
        raise ResultsError(f"base model {base!r} not in results (have {sorted(models)})")
    return model, base


def known_metric_names(results: Mapping[str, Any] | None = None) -> set[str]:
    """Every metric in the registry plus every metric the results mention: the names a gate may use."""
    from tuneforge.eval.registry import REGISTRY

    names = set(REGISTRY)
    if results:
        for entry in (results.get("models") or {}).values():
            if isinstance(entry, Mapping):
                names |= set(entry.get("summary") or {})
                for sl in (entry.get("slices") or {}).values():
                    names |= set(sl or {})
        names |= set(results.get("comparison") or {}) | set(results.get("metrics") or [])
    return names


def _missing_hint(metric: str) -> str:
    from tuneforge.eval.registry import resolve

    info = resolve(metric)
    return f"; it is produced by {info.how_to_produce()}" if info else ""


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _compare(actual: float, op: str, threshold: float) -> bool:
    equal = math.isclose(actual, threshold, rel_tol=0.0, abs_tol=_EQ_TOL)
    return {
        ">=": equal or actual > threshold,
        ">": not equal and actual > threshold,
        "<=": equal or actual < threshold,
        "<": not equal and actual < threshold,
        "==": equal,
    }[op]


def _fmt(v: float, unit: str, delta: bool) -> str:
    if unit == "raw":
        return f"{v:+g}" if delta else f"{v:g}"
    return f"{v:+.4f} ({v * 100:+.2f} pp)" if delta else f"{v:.4f} ({v * 100:.2f}%)"


def _lookup(results: Mapping[str, Any], model: str, metric: str, on: str | None) -> tuple[Any, str | None]:
    entry = results["models"][model] or {}
    if on is None:
        summary = entry.get("summary") or {}
        if metric not in summary:
            return None, f"metric {metric!r} missing from {model} summary{_missing_hint(metric)}"
        return summary[metric], None
    slices = entry.get("slices") or {}
    if on not in slices:
        return None, (f"slice {on!r} missing from {model} results (slices: {sorted(slices) or 'none'})"
                      f"{_missing_hint(metric)}")
    if metric not in (slices[on] or {}):
        return None, f"metric {metric!r} missing from slice {on!r} of {model}{_missing_hint(metric)}"
    return slices[on][metric], None


def _evaluate_one(results: Mapping[str, Any], g: Gate, model: str, base: str | None) -> GateOutcome:
    line = f"{g.lineno}: {g.describe()}" if g.lineno else g.describe()
    # The scale was fixed when the gate was parsed (including the file's raw_metrics); "pp" is a fraction metric.
    scale = "raw" if g.unit == "raw" else "fraction"
    ci = ""
    if not g.delta_vs_base:
        value, missing = _lookup(results, model, g.metric, g.on)
    else:
        comp = (results.get("comparison") or {}).get(g.metric) if g.on is None else None
        if g.stat != "delta" and not (isinstance(comp, Mapping) and _number(comp.get(g.stat)) is not None):
            hint = _missing_hint(g.metric) if g.metric not in (results.get("comparison") or {}) else ""
            return GateOutcome(line, False, None, f"FAILED (missing): no paired interval for {g.metric!r} in the "
                               f"results' comparison (a base model evaluated on the same items gives one){hint}",
                               g)
        if isinstance(comp, Mapping) and "delta" in comp:
            value, missing = comp[g.stat], None
            lo, hi = _number(comp.get("ci_low")), _number(comp.get("ci_high"))
            if lo is not None and hi is not None:
                ci = f"; CI [{_fmt(lo, scale, True)}, {_fmt(hi, scale, True)}]"
        elif base is None:
            value, missing = None, f"delta_vs_base needs a base model or a comparison entry for {g.metric!r}"
        else:
            tuned_v, missing = _lookup(results, model, g.metric, g.on)
            base_v, base_missing = _lookup(results, base, g.metric, g.on)
            missing = missing or base_missing
            value = None
            if not missing:
                t, b = _number(tuned_v), _number(base_v)
                if t is None or b is None:
                    bad = tuned_v if t is None else base_v
                    return GateOutcome(line, False, None, f"FAILED: value {bad!r} is not a finite number", g)
                value = t - b
    if missing:
        return GateOutcome(line, False, None, f"FAILED (missing): {missing}", g)
    actual = _number(value)
    if actual is None:
        return GateOutcome(line, False, None, f"FAILED: value {value!r} is not a finite number", g)
    bound = 1.0 if scale == "fraction" else math.inf
    lo_bound = -1.0 if g.delta_vs_base else 0.0
    if scale == "fraction" and not (lo_bound - _EQ_TOL <= actual <= bound + _EQ_TOL):
        return GateOutcome(
            line, False, actual,
            f"FAILED: {actual:g} is outside [{lo_bound:g}, 1] for a fraction metric; tuneforge stores it in [0, 1] "
            "(list it under raw_metrics if it is not a fraction)", g,
        )
    ok = _compare(actual, g.op, g.threshold)
    what = ("delta" if g.stat == "delta" else f"delta {g.stat}") if g.delta_vs_base else g.metric
    reason = f"{what} {_fmt(actual, scale, g.delta_vs_base)} {g.op} {_fmt(g.threshold, scale, g.delta_vs_base)}{ci}"
    return GateOutcome(line, ok, actual, ("passed: " if ok else "FAILED: ") + reason, g)


def evaluate_gates(
    results: Mapping[str, Any], gates: Sequence[Gate | str | Mapping[str, Any]], model: str | None = None,
    base: str | None = None, raw_metrics: Iterable[str] = (),
) -> list[GateOutcome]:
    """Check each gate against the gated model; one outcome per gate, in order."""
    raw = list(raw_metrics)
    parsed = [g if isinstance(g, Gate) else parse_gate(g, raw_metrics=raw) for g in gates]
    tuned, base_name = select_models(results, model, base)
    return [_evaluate_one(results, g, tuned, base_name) for g in parsed]
