"""Load a run config from YAML plus dotted command-line overrides, with errors that name key and line.

    cfg = load_config("examples/quickstart.yaml", ["training.max_steps=10", "method.name=full"])

Pydantic reports *which* key is wrong; the YAML node tree tells us *where* it is, so every error
reads like `examples/x.yaml:12: training.learing_rate: unknown key`.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tuneforge.config.schema import RunConfig
from tuneforge.errors import ConfigError

OVERRIDE_ORIGIN = "<command line>"


def _line_index(node: yaml.Node, path: tuple = (), index: dict | None = None) -> dict[tuple, int]:
    """Map each key path (('training', 'learning_rate')) to its 1-based line in the file."""
    index = {} if index is None else index
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = path + (key_node.value,)
            index[key_path] = key_node.start_mark.line + 1
            _line_index(value_node, key_path, index)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            index[path + (i,)] = item.start_mark.line + 1
            _line_index(item, path + (i,), index)
    return index


def _read_yaml(path: Path) -> tuple[dict, dict[tuple, int]]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the config must be a mapping of sections (model, data, training, ...)")
    return data, _line_index(node) if node is not None else {}


def parse_override(text: str) -> tuple[list[str], Any]:
    """`training.learning_rate=1e-4` -> (['training', 'learning_rate'], 0.0001); the value is YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY.PATH=VALUE, e.g. training.max_steps=20")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in parts):
        raise ConfigError(f"override {text!r}: empty key segment in {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> tuple[dict, dict[tuple, str]]:
    """Return a copy of `data` with the overrides set, and which key paths came from which override."""
    data = copy.deepcopy(data)
    sources: dict[tuple, str] = {}
    for text in overrides:
        parts, value = parse_override(text)
        cursor = data
        for depth, part in enumerate(parts[:-1]):
            nxt = cursor.get(part)
            if nxt is None:
                nxt = cursor[part] = {}
            if not isinstance(nxt, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"override {text!r}: {where} is a value, not a section")
            cursor = nxt
        cursor[parts[-1]] = value
        sources[tuple(parts)] = text
    return data, sources


def _format_errors(
    exc: ValidationError, origin: str, lines: dict[tuple, int], overrides: dict[tuple, str]
) -> str:
    messages = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            problem = "unknown key (misspelt? see `tuneforge config schema`)"
        elif err["type"] == "missing":
            problem = "required key is missing"
        else:
            problem = err["msg"]
            if "input" in err and err["type"] not in {"value_error"}:
                problem += f" (got {err['input']!r})"
        where = origin
        for cut in range(len(loc), 0, -1):
            if loc[:cut] in overrides:
                where = f"{OVERRIDE_ORIGIN} {overrides[loc[:cut]]!r}"
                break
            if loc[:cut] in lines:
                where = f"{origin}:{lines[loc[:cut]]}"
                break
        messages.append(f"{where}: {key}: {problem}")
    return "\n".join(messages)


def validate_config(data: dict, origin: str = "<config>", lines: dict | None = None, overrides=None) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            "invalid config:\n" + _format_errors(exc, origin, lines or {}, overrides or {})
        ) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    path = Path(path)
    data, lines = _read_yaml(path)
    data, override_sources = apply_overrides(data, overrides or [])
    return validate_config(data, str(path), lines, override_sources)


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML (every default written out), as stored in the run directory."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
