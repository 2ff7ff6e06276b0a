"""Evaluation items, from a dataset file or from a task YAML.

Every evaluator in this package works on the same item dict::

    {"id": str, "messages": [chat messages before the answer], "prompt": None | str (a raw completion prompt),
     "reference": str, "slice": None | str, "row": normalised row (prompt + reference; for contamination),
     "where": "file:line"}

Task YAML (see examples/eval/)::

    name: sentiment
    data: sentiment.jsonl              # relative to the YAML; JSONL, JSON, CSV, Parquet or a saved datasets folder
    prompt: "Review: {text}\\nSentiment:"   # {field} placeholders; write {{ and }} for literal braces
    reference: label                   # the field holding the expected answer
    metrics: [accuracy, macro_f1, ece, brier]
    labels: [positive, negative]       # makes it a label task (scored from label-token probabilities)
    slice_field: language              # per-slice metrics, gateable with `on SLICE`
    system_prompt: "You are a sentiment classifier."

Without `prompt`, `data` must be a dataset in a format the data commands read (chat, alpaca, prompt/completion)
and the reference is the last assistant turn, exactly as `tuneforge eval --data` does.
"""
from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tuneforge.errors import ConfigError, DataError
from tuneforge.eval import registry


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Task name; used in results and the report.")
    data: str = Field(description="Data file (JSONL, JSON, CSV, Parquet or a saved datasets folder), relative to "
                      "the task YAML (or quickstart:FILE).")
    prompt: str | None = Field(None, description="Prompt template with {field} placeholders; omit for chat data.")
    reference: str = Field("reference", description="Field of a data row holding the expected answer.")
    metrics: list[str] = Field(default_factory=lambda: ["exact_match"],
                               description="Metric names from tuneforge.eval.registry; the first is the headline.")
    labels: list[str] | None = Field(None, description="Allowed answers; makes this a label task.")
    slice_field: str | None = Field(None, description="Row field whose value names a slice (task, language ...).")
    system_prompt: str | None = Field(None, description="System message put before every prompt.")
    id_field: str = Field("id", description="Row field used as the item id (default: the file line).")
    max_new_tokens: int | None = Field(None, gt=0, description="Generation budget; overrides --max-new-tokens.")


def load_task(path: str | Path) -> TaskSpec:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read task file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a task file is a mapping with name, data, prompt, reference, metrics")
    try:
        spec = TaskSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}", hint="fields: " + ", ".join(TaskSpec.model_fields)) from None
    for name in spec.metrics:
        try:
            registry.get(name)
        except ConfigError as exc:
            raise ConfigError(f"{path}: metrics: {exc.message}", hint=exc.hint) from None
    _, label_metrics = registry.split_metrics(spec.metrics)
    if label_metrics and not spec.labels:
        raise ConfigError(f"{path}: metrics {label_metrics} need a 'labels:' list")
    if spec.labels is not None and len(set(spec.labels)) != len(spec.labels) or spec.labels == []:
        raise ConfigError(f"{path}: labels must be a non-empty list without repeats")
    if spec.prompt is not None:
        template_fields(spec.prompt, str(path))
    return spec


def template_fields(template: str, where: str) -> list[str]:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"{where}: prompt: {exc}", hint="write {{ and }} for literal braces") from None
    for name in names:
        if not name.isidentifier():
            raise ConfigError(f"{where}: prompt: placeholder {{{name}}} is not a field name",
                              hint="placeholders are {field}; write {{ and }} for literal braces")
    return names


def _slice_value(value: Any, where: str, field: str) -> str:
    if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value) == "":
        raise DataError(f"{where}: field {field!r} must be a non-empty string or integer to name a slice")
    return str(value)


def items_from_task(spec: TaskSpec, task_path: str | Path | None) -> list[dict]:
    """The task's items; every row problem is a DataError naming file, line and field."""
    from tuneforge.data.formats import is_bundled, read_objects, resolve_data_path

    if spec.prompt is None:
        return items_from_dataset(spec.data if is_bundled(spec.data) or task_path is None
                                  else str(Path(task_path).parent / spec.data),
                                  slice_field=spec.slice_field, system_prompt=spec.system_prompt)
    base = Path(task_path).parent if task_path else Path(".")
    data_path = resolve_data_path(spec.data) if is_bundled(spec.data) else base / spec.data
    shown = str(data_path)
    fields = template_fields(spec.prompt, "task")
    items, seen = [], set()
    for lineno, row in read_objects(data_path, shown):
        where = f"{shown}:{lineno}"
        for name in [*fields, spec.reference] + ([spec.slice_field] if spec.slice_field else []):
            if name not in row:
                raise DataError(f"{where}: row has no field {name!r}", hint=f"row fields: {', '.join(sorted(row))}")
        reference = row[spec.reference]
        if not isinstance(reference, str):
            reference = json.dumps(reference) if isinstance(reference, (dict, list)) else str(reference)
        if spec.labels is not None and reference not in spec.labels:
            raise DataError(f"{where}: field {spec.reference!r} is {reference!r}, not one of the labels {spec.labels}")
        item_id = str(row.get(spec.id_field, lineno))
        if item_id in seen:
            raise DataError(f"{where}: duplicate item id {item_id!r} (field {spec.id_field!r})")
        seen.add(item_id)
        user = spec.prompt.format_map({k: (v if isinstance(v, str) else json.dumps(v)) for k, v in row.items()})
        messages = ([{"role": "system", "content": spec.system_prompt}] if spec.system_prompt else [])
        messages.append({"role": "user", "content": user})
        items.append({
            "id": item_id, "messages": messages, "prompt": None, "reference": reference, "where": where,
            "slice": _slice_value(row[spec.slice_field], where, spec.slice_field) if spec.slice_field else None,
            "row": {"messages": messages + [{"role": "assistant", "content": reference}]},
        })
    return items


def items_from_dataset(path: str, *, slice_field: str | None = None, system_prompt: str | None = None) -> list[dict]:
    """Items from any dataset file the data commands read; extra row keys (meta) can name the id and slice."""
    from tuneforge.data.chat_template import prompt_messages
    from tuneforge.data.formats import load_dataset_file

    loaded = load_dataset_file(path)
    items, seen = [], set()
    for index, row in enumerate(loaded.rows):
        where = loaded.where(index)
        meta = row.get("meta", {})
        item_id = str(meta.get("id", where))
        if item_id in seen:
            raise DataError(f"{where}: duplicate item id {item_id!r}")
        seen.add(item_id)
        slice_value = None
        if slice_field:
            if slice_field not in meta:
                raise DataError(f"{where}: row has no field {slice_field!r} to slice on",
                                hint=f"extra fields of this row: {', '.join(sorted(meta)) or 'none'}")
            slice_value = _slice_value(meta[slice_field], where, slice_field)
        if "messages" in row:
            messages = [{"role": m["role"], "content": m["content"]} for m in prompt_messages(row)]
            if system_prompt and not any(m["role"] == "system" for m in messages):
                messages.insert(0, {"role": "system", "content": system_prompt})
            reference = [m for m in row["messages"] if m["role"] == "assistant"][-1]["content"]
            items.append({"id": item_id, "messages": messages, "prompt": None, "reference": reference,
                          "slice": slice_value, "where": where, "row": {k: v for k, v in row.items() if k != "meta"}})
        else:
            items.append({"id": item_id, "messages": None, "prompt": row["prompt"], "reference": row["completion"],
                          "slice": slice_value, "where": where, "row": {"prompt": row["prompt"],
                                                                        "completion": row["completion"]}})
    return items
