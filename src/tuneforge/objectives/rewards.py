"""Programmatic reward functions for objective `rl`, and how config strings name them.

TRL calls each with `prompts`, `completions` and every extra dataset column as keyword arguments (we add
`reference`, the row's known-good answer, when there is one) and expects one float per completion.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from tuneforge.errors import ConfigError


def _text(completion) -> str:
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return "".join(m.get("content", "") for m in completion)
    return str(completion)


def length_penalty(prompts, completions, **kwargs) -> list[float]:
    """-characters / 100: a shaping term that favours short answers."""
    return [-len(_text(c)) / 100.0 for c in completions]


#: Reward shaping terms that are not evaluation metrics (every item metric of the registry is a reward too).
SHAPING = {"length_penalty": length_penalty}


def metric_reward(name: str):
    """An item metric of the registry as a TRL reward function: score(completion, the row's reference)."""
    from tuneforge.eval import registry

    scorer = registry.item_scorer(name)
    needs_reference = registry.get(name).needs_reference

    def reward(prompts, completions, reference=None, **kwargs) -> list[float]:
        if reference is None and not needs_reference:
            reference = [""] * len(completions)
        if reference is None:
            raise ConfigError(f"objective.rl.reward: {name} scores against a reference answer, and these rows "
                              "have none", hint="use chat / prompt_completion / preference data, or json_valid")
        return [float(scorer(_text(c), ref or "")) for c, ref in zip(completions, reference)]

    reward.__name__ = name  # TRL logs each reward under its function's name
    return reward


def resolve_reward(spec: str):
    """A registry item metric, a shaping term, `module:function`, or a reward-model folder (a path string)."""
    from tuneforge.eval import registry

    if spec in SHAPING:
        return SHAPING[spec]
    if spec in registry.REGISTRY and registry.get(spec).kind == "item":
        return metric_reward(spec)
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
    item_metrics = sorted(n for n, m in registry.REGISTRY.items() if m.kind == "item")
    raise ConfigError(f"objective.rl.reward: unknown reward {spec!r}",
                      hint=f"use an item metric ({', '.join(item_metrics)}), {', '.join(SHAPING)}, "
                           "`module:function` or a reward-model folder")
