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
    cohort_field: group                # fairness: every metric per cohort with CIs, gap gateable (cohort_gap:M)
    system_prompt: "You are a sentiment classifier."

Without `prompt`, `data` must be a dataset in a format the data commands read (chat, alpaca, prompt/completion)
and the reference is the last assistant turn, exactly as `tuneforge eval --data` does.

A code task (pass@k; the replies run in the sandbox, eval/sandbox.py)::

    name: mini-mbpp
    kind: code
    data: problems.jsonl               # rows: {"id": ..., "text": ..., "tests": "assert add(1, 2) == 3"}
    prompt: "Write a Python function. {text}"
    tests_field: tests                 # row field with Python test code (asserts) run after each reply's code
    metrics: [pass@1, pass@5]          # pass@<k>; only these for kind: code
    samples: 10                        # replies sampled per item (n); at least the largest k (default: it)
    timeout_s: 10                      # per reply, wall clock in the sandbox

Items of a code task also carry `tests`; `reference` is the row's reference field if it has one (a canonical
solution), else the tests. Score an item with sandbox.score_code_samples(replies, item["tests"], task.pass_k()).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tuneforge.data.text import template_fields
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
    cohort_field: str | None = Field(None, description="Row field naming each item's cohort (fairness: metrics per "
                                     "cohort with CIs and the largest gap, gateable as cohort_gap:METRIC).")
    system_prompt: str | None = Field(None, description="System message put before every prompt.")
    id_field: str = Field("id", description="Row field used as the item id (default: the file line).")
    max_new_tokens: int | None = Field(None, gt=0, description="Generation budget; overrides --max-new-tokens.")
    kind: Literal["text", "code"] = Field("text", description="text: replies scored by the metrics; code: replies "
                                          "are programs run against each row's tests (pass@k metrics).")
    tests_field: str = Field("tests", description="Code tasks: row field with the Python test code (asserts).")
    samples: int | None = Field(None, gt=0, description="Code tasks: replies sampled per item (n of pass@k); "
                                "default the largest k.")
    timeout_s: float | None = Field(None, gt=0, description="Code tasks: wall-clock limit per reply in the sandbox.")

    def pass_k(self) -> list[int]:
        """The k of each pass@k metric, in the order of `metrics`."""
        return [int(m.group(1)) for m in map(_PASS_AT.fullmatch, self.metrics) if m]


_PASS_AT = re.compile(r"pass@([1-9][0-9]*)")
_CODE_ONLY = ("samples", "timeout_s", "tests_field")


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
    if spec.kind == "code" or any(m.startswith("pass@") for m in spec.metrics):
        _check_code_task(spec, path)
        if spec.prompt is not None:
            template_fields(spec.prompt, str(path))
        return spec
    extra = [k for k in _CODE_ONLY if k in raw]
    if extra:
        raise ConfigError(f"{_key_line(path, extra[0])}: {extra[0]}: only for code tasks (kind: code)")
    try:
        spec.metrics = registry.expand(spec.metrics)
        _, label_metrics, _ = registry.split_metrics(spec.metrics)
    except ConfigError as exc:
        raise ConfigError(f"{path}: metrics: {exc.message}", hint=exc.hint) from None
    if label_metrics and not spec.labels:
        raise ConfigError(f"{path}: metrics {label_metrics} need a 'labels:' list")
    if spec.labels is not None and len(set(spec.labels)) != len(spec.labels) or spec.labels == []:
        raise ConfigError(f"{path}: labels must be a non-empty list without repeats")
    if spec.prompt is not None:
        template_fields(spec.prompt, str(path))
    return spec


def _key_line(path: Path, key: str) -> str:
    """`file:line` of a top-level key of the task YAML (the file alone if it cannot be located)."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
        for key_node, _ in node.value:
            if key_node.value == key:
                return f"{path}:{key_node.start_mark.line + 1}"
    except (OSError, yaml.YAMLError, AttributeError, TypeError):
        pass
    return str(path)


def _check_code_task(spec: TaskSpec, path: Path) -> None:
    hint = "a code task: kind: code, a prompt, metrics: [pass@1, pass@10], samples: 10 (>= the largest k)"
    if spec.kind != "code":
        wrong = [m for m in spec.metrics if m.startswith("pass@")]
        raise ConfigError(f"{_key_line(path, 'metrics')}: metrics: {wrong} run generated code; they need "
                          "'kind: code'", hint=hint)
    bad = [m for m in spec.metrics if not _PASS_AT.fullmatch(m)]
    if bad:
        raise ConfigError(f"{_key_line(path, 'metrics')}: metrics: {bad} - a code task is scored with pass@<k> "
                          "metrics, k a positive integer (pass@1, pass@10)", hint=hint)
    ks = spec.pass_k()
    if len(set(ks)) != len(ks):
        raise ConfigError(f"{_key_line(path, 'metrics')}: metrics: {spec.metrics} repeat a k", hint=hint)
    if spec.samples is not None and spec.samples < max(ks):
        raise ConfigError(f"{_key_line(path, 'samples')}: samples: {spec.samples} replies per item cannot estimate "
                          f"pass@{max(ks)}; samples must be at least the largest k", hint=hint)
    if spec.prompt is None:
        raise ConfigError(f"{_key_line(path, 'kind')}: prompt: a code task needs a prompt template "
                          "with the row fields that describe the problem", hint=hint)
    if spec.labels is not None:
        raise ConfigError(f"{_key_line(path, 'labels')}: labels: a code task has no labels", hint=hint)


def _slice_value(value: Any, where: str, field: str, what: str = "slice") -> str:
    if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value) == "":
        raise DataError(f"{where}: field {field!r} must be a non-empty string or integer to name a {what}")
    return str(value)


def items_from_task(spec: TaskSpec, task_path: str | Path | None) -> list[dict]:
    """The task's items; every row problem is a DataError naming file, line and field."""
    from tuneforge.data.formats import is_bundled, read_objects, resolve_data_path

    code = spec.kind == "code"
    if code and spec.prompt is None:
        raise ConfigError(f"task {spec.name!r}: prompt: a code task needs a prompt template")
    if spec.prompt is None:
        return items_from_dataset(spec.data if is_bundled(spec.data) or task_path is None
                                  else str(Path(task_path).parent / spec.data),
                                  slice_field=spec.slice_field, system_prompt=spec.system_prompt,
                                  cohort_field=spec.cohort_field)
    base = Path(task_path).parent if task_path else Path(".")
    data_path = resolve_data_path(spec.data) if is_bundled(spec.data) else base / spec.data
    shown = str(data_path)
    fields = template_fields(spec.prompt, "task")
    items, seen = [], set()
    for lineno, row in read_objects(data_path, shown):
        where = f"{shown}:{lineno}"
        needed = ([*fields, spec.tests_field if code else spec.reference]
                  + [f for f in (spec.slice_field, spec.cohort_field) if f])
        for name in needed:
            if name not in row:
                raise DataError(f"{where}: row has no field {name!r}", hint=f"row fields: {', '.join(sorted(row))}")
        tests = _code_tests(row[spec.tests_field], where, spec.tests_field) if code else None
        reference = row.get(spec.reference, tests)
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
        if spec.cohort_field:
            items[-1]["cohort"] = _slice_value(row[spec.cohort_field], where, spec.cohort_field, "cohort")
        if code:
            items[-1]["tests"] = tests
    return items


def _code_tests(value: Any, where: str, field: str) -> str:
    # Checked here so a typo in the task data fails before any reply is generated, not as n failed samples.
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {field!r} must be a non-empty string of Python test code (asserts)")
    try:
        compile(value, f"{where}: {field}", "exec")
    except SyntaxError as exc:
        raise DataError(f"{where}: field {field!r} is not valid Python: {exc.msg} (line {exc.lineno} of the tests)"
                        ) from None
    return value


def items_from_dataset(path: str, *, slice_field: str | None = None, system_prompt: str | None = None,
                       max_items: int | None = None, cohort_field: str | None = None) -> list[dict]:
    """Items from any dataset file the data commands read; extra row keys (meta) can name the id, slice, cohort."""
    from tuneforge.data.formats import load_dataset_file

    return items_from_loaded(load_dataset_file(path), slice_field=slice_field, system_prompt=system_prompt,
                             max_items=max_items, cohort_field=cohort_field)


_MESSAGE_KEYS = ("role", "content", "tool_calls", "tool_call_id", "name")


def make_item(item_id, where: str, prompt, reference: str, *, slice_value: str | None = None, row: dict | None = None,
              **extra) -> dict:
    """One evaluation item: chat messages (a list) or a raw prompt string, its reference answer and provenance."""
    # Tool calls and results stay in the messages (the template renders them); training-only keys such as a
    # message's loss `weight` do not.
    messages = ([{k: v for k, v in m.items() if k in _MESSAGE_KEYS} for m in prompt] if isinstance(prompt, list)
                else None)
    return {"id": str(item_id), "messages": messages, "prompt": None if messages is not None else prompt,
            "reference": reference, "slice": slice_value, "where": where, "row": row, **extra}


def items_from_loaded(loaded, *, slice_field: str | None = None, system_prompt: str | None = None,
                      max_items: int | None = None, cohort_field: str | None = None) -> list[dict]:
    """Items from an already loaded dataset (chat or prompt/completion rows); ids from meta.id, else file:line."""
    from tuneforge.data.chat_template import prompt_messages

    items, seen = [], set()
    count = len(loaded.rows) if max_items is None else min(max_items, len(loaded.rows))
    for index, row in enumerate(loaded.rows[:count]):
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
        extra = {}
        if cohort_field:
            if cohort_field not in meta:
                raise DataError(f"{where}: row has no field {cohort_field!r} naming its cohort",
                                hint=f"extra fields of this row: {', '.join(sorted(meta)) or 'none'}")
            extra["cohort"] = _slice_value(meta[cohort_field], where, cohort_field, "cohort")
        if "messages" in row:
            messages = prompt_messages(row)
            if system_prompt and not any(m["role"] == "system" for m in messages):
                messages = [{"role": "system", "content": system_prompt}, *messages]
            reference = [m for m in row["messages"] if m["role"] == "assistant"][-1]["content"]
            items.append(make_item(item_id, where, messages, reference, slice_value=slice_value,
                                   row={k: v for k, v in row.items() if k != "meta"}, **extra))
        else:
            items.append(make_item(item_id, where, row["prompt"], row["completion"], slice_value=slice_value,
                                   row={"prompt": row["prompt"], "completion": row["completion"]}, **extra))
    return items
