"""What a sweep explores: `--param KEY=V1,V2,...` (a grid axis) or `--param KEY=int:A..B|float:A..B|log:A..B` (a range).

    training.learning_rate=1e-4,2e-4,4e-4   -> a grid axis of three values (each parsed as YAML, like an override)
    method.lora.r=int:4..32                 -> integers 4..32
    training.warmup_ratio=float:0..0.1      -> uniform floats
    training.learning_rate=log:1e-5..1e-3   -> floats, log-uniform

Every error names the --param it comes from; config keys are checked by the config loader (which names them).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tuneforge.errors import ConfigError

RANGE_KINDS = ("int", "float", "log")
_RANGE = re.compile(r"(?P<kind>[a-z]+):(?P<low>[^.].*?)\.\.(?P<high>.+)")
_DURATION = re.compile(r"(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>s|m|h|d)?")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


@dataclass(frozen=True)
class ParamSpec:
    name: str                      # dotted config key, e.g. training.learning_rate
    text: str                      # the --param as given, for error messages
    choices: tuple | None = None   # a grid axis
    kind: str | None = None        # a range: int / float / log
    low: float | None = None
    high: float | None = None

    @property
    def is_grid(self) -> bool:
        return self.choices is not None

    def probe_values(self) -> list:
        """Values that prove the key and its type against the config: every grid value, or both range ends."""
        if self.is_grid:
            return list(self.choices)
        return [int(self.low), int(self.high)] if self.kind == "int" else [self.low, self.high]

    def suggest(self, trial) -> Any:
        if self.is_grid:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high))
        return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "log")


def _bad(text: str, problem: str) -> ConfigError:
    return ConfigError(f"--param {text!r}: {problem}",
                       hint="use KEY=V1,V2,... for a grid or KEY=int:A..B, float:A..B, log:A..B for a range, "
                            "e.g. --param training.learning_rate=1e-4,2e-4 --param method.lora.r=int:4..32")


def _number(text: str, raw: str, what: str) -> float:
    try:
        value = float(yaml.safe_load(raw))
    except (TypeError, ValueError, yaml.YAMLError):
        raise _bad(text, f"{what} {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise _bad(text, f"{what} {raw!r} is not finite")
    return value


def parse_param(text: str) -> ParamSpec:
    if "=" not in text:
        raise _bad(text, "expected KEY=VALUES")
    key, raw = (part.strip() for part in text.split("=", 1))
    if not key or any(not part for part in key.split(".")):
        raise _bad(text, f"empty key segment in {key!r}")
    if not raw:
        raise _bad(text, f"{key}: no values")
    match = _RANGE.fullmatch(raw)
    if match and match["kind"] in RANGE_KINDS:
        kind = match["kind"]
        low, high = _number(text, match["low"], "low end"), _number(text, match["high"], "high end")
        if low >= high:
            raise _bad(text, f"{key}: the low end {low:g} must be below the high end {high:g}")
        if kind == "int" and (low != int(low) or high != int(high)):
            raise _bad(text, f"{key}: int ranges need whole numbers")
        if kind == "log" and low <= 0:
            raise _bad(text, f"{key}: a log range needs a positive low end (got {low:g})")
        return ParamSpec(key, text, kind=kind, low=low, high=high)
    if match or re.fullmatch(r"[a-z]+:.*", raw) and ".." in raw:
        raise _bad(text, f"{key}: unknown range kind {raw.split(':', 1)[0]!r} (use {', '.join(RANGE_KINDS)})")
    if raw.startswith(("[", "{")):
        raise _bad(text, f"{key}: list the values without brackets, separated by commas")
    choices = []
    for item in raw.split(","):
        if not item.strip():
            raise _bad(text, f"{key}: empty value in {raw!r}")
        try:
            value = yaml.safe_load(item)
        except yaml.YAMLError:
            value = item.strip()
        if isinstance(value, str) and _NUMBER.fullmatch(value):
            value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string; a learning rate is meant
        if not (value is None or isinstance(value, (str, int, float, bool))):
            raise _bad(text, f"{key}: {item!r} is not a plain value (numbers, words, true/false)")
        if value in choices:
            raise _bad(text, f"{key}: {item!r} is listed twice")
        choices.append(value)
    return ParamSpec(key, text, choices=tuple(choices))


def parse_params(texts: list[str]) -> list[ParamSpec]:
    specs = [parse_param(t) for t in texts]
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.name in seen:
            raise _bad(spec.text, f"{spec.name} is already swept by --param {seen[spec.name]!r}")
        seen[spec.name] = spec.text
    if not specs:
        raise ConfigError("nothing to sweep: give at least one --param KEY=VALUES")
    return specs


def override(name: str, value: Any) -> str:
    """A dotted override whose value the config loader reads back as exactly `value` (YAML flow form)."""
    dumped = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return f"{name}={dumped.removesuffix('...').strip()}"


def check_against_config(config: str | Path, base_overrides: list[str], specs: list[ParamSpec]) -> None:
    """Load the config once per probe value, so an unknown key or a wrong type fails now, not in trial 7."""
    from tuneforge.config.loader import load_config

    for spec in specs:
        for value in spec.probe_values():
            try:
                load_config(config, [*base_overrides, override(spec.name, value)])
            except ConfigError as exc:
                raise ConfigError(f"--param {spec.text!r}: {exc.message}", hint=exc.hint) from None


def grid_size(specs: list[ParamSpec]) -> int | None:
    """Number of grid points when every param is a grid axis; None when some param is a range."""
    if not all(s.is_grid for s in specs):
        return None
    return math.prod(len(s.choices) for s in specs)


def parse_budget(text: str | None) -> float | None:
    """`30m`, `2h`, `90s`, `1.5h` or plain seconds -> seconds."""
    if text is None:
        return None
    match = _DURATION.fullmatch(text.strip().lower())
    if not match or float(match["value"]) <= 0:
        raise ConfigError(f"--budget {text!r}: expected a positive duration such as 90s, 30m or 2h")
    return float(match["value"]) * _UNIT_SECONDS[match["unit"]]
