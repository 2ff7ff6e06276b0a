"""Programmatic reward functions for objective `rl`, and how config strings name them.

TRL calls each with `prompts`, `completions` and every extra dataset column as keyword arguments (we add
`reference`, the row's known-good answer, when there is one) and expects one float per completion.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

from tuneforge.errors import ConfigError


def _text(completion) -> str:
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return "".join(m.get("content", "") for m in completion)
    return str(completion)


def json_valid(prompts, completions, **kwargs) -> list[float]:
    """1.0 when the completion is exactly one JSON object (surrounding whitespace allowed), else 0.0."""
    out = []
    for completion in completions:
        try:
            out.append(1.0 if isinstance(json.loads(_text(completion).strip()), dict) else 0.0)
        except ValueError:
            out.append(0.0)
    return out


def json_fields(prompts, completions, reference=None, **kwargs) -> list[float]:
    """Per-field accuracy of a JSON answer against the row's reference (tuneforge.eval's json_fields metric)."""
    from tuneforge.eval.metrics import get_metric

    if reference is None:
        raise ConfigError("objective.rl.reward: json_fields needs rows with a reference answer",
                          hint="use chat / prompt_completion / preference data, or the json_valid reward")
    scorer = get_metric("json_fields")
    return [float(scorer(_text(c), ref)) for c, ref in zip(completions, reference)]


def length_penalty(prompts, completions, **kwargs) -> list[float]:
    """-characters / 100: a shaping term that favours short answers."""
    return [-len(_text(c)) / 100.0 for c in completions]


SHIPPED = {"json_valid": json_valid, "json_fields": json_fields, "length_penalty": length_penalty}


def resolve_reward(spec: str):
    """A shipped name, `module:function`, or a reward-model folder (returned as a path string for TRL to load)."""
    if spec in SHIPPED:
        return SHIPPED[spec]
    if Path(spec).is_dir():
        if not (Path(spec) / "config.json").is_file():
            raise ConfigError(f"objective.rl.reward: {spec} is a folder without config.json",
                              hint="point to a reward run's merged/ folder")
        return str(Path(spec).resolve())
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            func = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"objective.rl.reward: cannot import {spec!r}: {exc}",
                              hint="the module must be importable (on PYTHONPATH) and define the function") from exc
        if not callable(func):
            raise ConfigError(f"objective.rl.reward: {spec!r} is not callable")
        return func
    raise ConfigError(f"objective.rl.reward: unknown reward {spec!r}",
                      hint=f"use one of {', '.join(SHIPPED)}, `module:function` or a reward-model folder")
