"""Load a run config from YAML plus dotted command-line overrides, with errors that name key and line.

    cfg = load_config("examples/lora-contact-extraction.yaml", ["training.max_steps=10", "method.name=full"])

Pydantic reports *which* key is wrong; the YAML node tree tells us *where* it is, so every error
reads like `examples/x.yaml:12: training.learing_rate: unknown key`.
"""
from __future__ import annotations

import copy
import re
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
        loc = tuple(err["loc"]) or _named_key(err["msg"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            problem = "unknown key (misspelt? see `tuneforge config schema`)"
        elif err["type"] == "missing":
            problem = "required key is missing"
        else:
            problem = err["msg"]
            if "input" in err and err["type"] not in {"value_error"}:
                problem += f" (got {err['input']!r})"
        messages.append(f"{_where(loc, origin, lines, overrides)}: {key}: {problem}")
    return "\n".join(messages)


def _named_key(message: str) -> tuple:
    """The dotted key a cross-field check's message starts with (`training.x needs ...`), so the error can point at
    that key's line: RunConfig-level validators carry no location of their own."""
    found = re.match(r"(?:Value error, )?([a-z_]+(?:\.[a-z_]+)+)\b", message)
    return tuple(found.group(1).split(".")) if found else ()


def _where(loc: tuple, origin: str, lines: dict[tuple, int], overrides: dict[tuple, str]) -> str:
    """`file:line` of a key path (or of its nearest enclosing section), or the override that set it."""
    for cut in range(len(loc), 0, -1):
        if loc[:cut] in overrides:
            return f"{OVERRIDE_ORIGIN} {overrides[loc[:cut]]!r}"
        if loc[:cut] in lines:
            return f"{origin}:{lines[loc[:cut]]}"
    return origin


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


def distributed_config_problem(training, config_dir: Path | None = None) -> str | None:
    """Why training.distributed_config cannot be read (None: it can, or none is set).

    Like every path in a config (data files, templates), it is read from the current directory, not from the
    config file's folder; when only the latter would find it, the message says so.
    """
    import json

    if not training.distributed_config:
        return None
    given = Path(training.distributed_config).expanduser()
    if not given.is_file():
        problem = f"{given} does not exist"
        if not given.is_absolute():
            problem += f" (relative paths are read from the current directory: {Path.cwd() / given})"
            beside = config_dir / given if config_dir is not None else None
            if beside is not None and beside.is_file():
                problem += f"; {beside} exists: run from {config_dir} or give the path from here"
        return problem
    try:
        json.loads(given.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return f"{given} is not valid JSON ({error})"
    return None


def check_config_file(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """`load_config` plus the checks that read the files a config refers to, without loading any model.

    What `tuneforge config validate` runs: the schema, then whether training.distributed_config exists and is JSON,
    and whether data.max_length fits a local model folder's context window (read from its config.json). Every
    problem is named as `file:line: key: problem`.
    """
    from tuneforge.models import loading

    path = Path(path)
    data, lines = _read_yaml(path)
    data, override_sources = apply_overrides(data, overrides or [])
    cfg = validate_config(data, str(path), lines, override_sources)
    problems, hints = [], []
    problem = distributed_config_problem(cfg.training, config_dir=path.parent)
    if problem:
        problems.append((("training", "distributed_config"), problem))
    model_config = loading.local_model_config(cfg.model.source)
    if model_config is not None:
        problem = loading.context_window_problem(cfg.data, model_config, cfg.model.source)
        if problem:
            problems.append((("data", "max_length"), problem))
            hints.append(loading.CONTEXT_HINT)
    if problems:
        raise ConfigError("invalid config:\n" + "\n".join(
            f"{_where(loc, str(path), lines, override_sources)}: {'.'.join(loc)}: {problem}"
            for loc, problem in problems), hint="; ".join(hints) or None)
    return cfg


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML (every default written out), as stored in the run directory."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
