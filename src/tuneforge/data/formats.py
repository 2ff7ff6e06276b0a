"""Dataset files: locate, parse, validate and normalise them.

Row formats and their normalised shapes (what every later stage sees):

    chat               {"messages": [{"role": ..., "content": ..., "weight"?: 0|1}, ...]}
    alpaca             {"instruction", "output", "input"?, "system"?}  -> {"messages": [...]}
    prompt_completion  {"prompt", "completion"}                         -> {"prompt", "completion"}
    preference         {"prompt", "chosen", "rejected"}, or OpenAI's DPO shape {"input": {"messages"},
                       "preferred_output", "non_preferred_output"}     -> {"prompt", "chosen", "rejected"}
    kto                {"prompt", "completion", "label": bool}          -> {"prompt", "completion", "label"}
    text               {"text"}                                         -> {"text"}

Preference and KTO rows are conversational (prompt = message list ending with a user turn, chosen /
rejected / completion = list of assistant messages) when the source is, and plain strings when the source
is; a string answer under a conversational prompt is wrapped as one assistant message.

Fields a format does not use (id, task, ...) are kept under ``row["meta"]`` so nothing is lost. A source
row may carry its own "meta" object: its keys are merged into row["meta"], so a normalised row written back
as JSONL (what `clean`, `split`, `mix` and `convert` do) reads back as exactly the same row.

File types (JSONL, JSON, CSV, Parquet, saved `datasets` folders) and what "line" means for each: readers.py.

Validation never stops at the first problem: a dataset with a systematic defect usually has it on many
lines, and a user who fixes one line per run would rerun the whole pipeline dozens of times. All problems
are collected with their file, line and field, and raised together as one DataError.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from tuneforge.data.readers import (
    content_sha256,
    file_type,
    is_saved_dataset,
    parse_json_array,
    parse_jsonl,
    raw_line,
    read_records,
)
from tuneforge.errors import DataError

FORMATS = ("chat", "alpaca", "prompt_completion", "preference", "kto", "text")
ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = ("role", "content", "weight")
QUICKSTART_PREFIX = "quickstart:"
#: Prefixes naming data bundled with the package -> their folder under tuneforge/assets. `samples:` holds the
#: preference/kto/text/multitask samples derived from the quickstart task (scripts/make_objective_samples.py).
BUNDLED_PREFIXES = {QUICKSTART_PREFIX: "quickstart", "samples:": "samples"}
MAX_SHOWN_PROBLEMS = 50

_FORMAT_HINT = (
    "each row must be a JSON object in one of the formats: chat {\"messages\": [{\"role\": \"user\", "
    "\"content\": ...}, {\"role\": \"assistant\", \"content\": ...}]}, alpaca {\"instruction\": ..., "
    "\"input\": ... (optional), \"output\": ...}, prompt_completion {\"prompt\": ..., \"completion\": ...}, "
    "preference {\"prompt\", \"chosen\", \"rejected\"} (or OpenAI's input/preferred_output/non_preferred_output), "
    "kto {\"prompt\", \"completion\", \"label\": true|false} or text {\"text\": ...}"
)


@dataclass
class LoadedData:
    path: str
    format: str
    rows: list[dict]
    line_numbers: list[int]
    sha256: str
    file_type: str = "jsonl"
    # With skip_invalid: one {"line", "reasons", "row" | "raw"} per rejected row, in file order.
    rejected: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, index: int) -> str:
        """`file:line` of row `index`, for error messages of later stages (rendering, training)."""
        return f"{self.path}:{self.line_numbers[index]}"


@dataclass
class _Problems:
    """Collects (line, field, problem) triples; raised together once the whole file was read."""

    path: str
    items: list[tuple[int | None, str | None, str]] = field(default_factory=list)

    def add(self, line: int | None, fld: str | None, problem: str) -> None:
        self.items.append((line, fld, problem))

    def raise_if_any(self, hint: str | None = _FORMAT_HINT) -> None:
        if not self.items:
            return
        self.items.sort(key=lambda item: (item[0] or 0))
        shown = [self._format(*item) for item in self.items[:MAX_SHOWN_PROBLEMS]]
        rest = len(self.items) - len(shown)
        if rest:
            shown.append(f"... and {rest} more problem{'s' if rest != 1 else ''} not shown")
        count = len(self.items)
        head = f"{count} problem{'s' if count != 1 else ''} in {self.path}:"
        raise DataError(head + "\n  " + "\n  ".join(shown), hint=hint)

    def _format(self, line: int | None, fld: str | None, problem: str) -> str:
        where = f"{self.path}:{line}" if line is not None else self.path
        return f"{where}: {fld}: {problem}" if fld else f"{where}: {problem}"


# ---------------------------------------------------------------------------------------------- paths


def is_bundled(path: str) -> bool:
    return isinstance(path, str) and path.startswith(tuple(BUNDLED_PREFIXES))


def _bundled_files(folder: str) -> list[str]:
    root = resources.files("tuneforge").joinpath("assets", folder)
    try:
        return sorted(p.name for p in root.iterdir() if p.name.endswith((".jsonl", ".json")))
    except (FileNotFoundError, NotADirectoryError):
        return []


def resolve_data_path(path: str) -> Path:
    """Turn a user's data reference into an existing file path.

    ``quickstart:NAME`` and ``samples:NAME`` refer to data bundled with the package, so they work from any
    working directory and from an installed wheel.
    """
    if not isinstance(path, str) or not path.strip():
        raise DataError("data path is empty", hint="give a JSONL file path or e.g. `quickstart:train.jsonl`")
    if is_bundled(path):
        prefix = next(p for p in BUNDLED_PREFIXES if path.startswith(p))
        folder, name = BUNDLED_PREFIXES[prefix], path[len(prefix):]
        available = _bundled_files(folder)
        # A bare name only: a path separator would let the prefix reach outside the bundled folder.
        if name not in available:
            raise DataError(
                f"bundled dataset {path!r} does not exist",
                hint="available: " + (", ".join(prefix + n for n in available) or "none (broken install?)"),
            )
        resolved = Path(str(resources.files("tuneforge").joinpath("assets", folder, name)))
        if not resolved.is_file():
            raise DataError(
                f"bundled dataset {path!r} is not a plain file at {resolved}",
                hint="reinstall tuneforge from a wheel or source checkout (zipped installs are not supported)",
            )
        return resolved
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise DataError(
            f"data file not found: {path}",
            hint="check the path (relative paths are resolved from the current directory: "
            f"{Path.cwd()}); bundled data is addressed as `quickstart:train.jsonl`",
        )
    if not resolved.is_file() and not is_saved_dataset(resolved):
        raise DataError(f"data path is not a file: {path}",
                        hint="point to a .jsonl, .json, .csv or .parquet file, or to a folder written by "
                        "datasets' Dataset.save_to_disk (it holds state.json)")
    return resolved


# -------------------------------------------------------------------------------------------- parsing

# Kept under their old names: the parsers moved to readers.py with the other file types.
_parse_jsonl = parse_jsonl
_parse_json_array = parse_json_array


# ----------------------------------------------------------------------------------------- validation


def detect_format(obj: dict) -> str | None:
    if "messages" in obj:
        return "chat"
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    if ("chosen" in obj and "rejected" in obj) or "preferred_output" in obj or "non_preferred_output" in obj:
        return "preference"
    if "prompt" in obj and "completion" in obj:
        # Only a boolean label makes a KTO row; a string label is ordinary metadata of a prompt_completion row.
        return "kto" if isinstance(obj.get("label"), bool) else "prompt_completion"
    if "text" in obj:
        return "text"
    return None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "list", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _text_field(obj: dict, key: str, line: int, problems: _Problems, *, required: bool = True,
                allow_empty: bool = False, label: str | None = None) -> str | None:
    label = label or key
    if key not in obj:
        if required:
            problems.add(line, label, "missing")
        return None
    value = obj[key]
    if not isinstance(value, str):
        problems.add(line, label, f"must be a string, got {_type_name(value)}")
        return None
    if not allow_empty and not value.strip():
        problems.add(line, label, "is empty")
        return None
    return value


def _weight(message: dict, label: str, role: Any, line: int, problems: _Problems) -> int | None:
    if "weight" not in message:
        return None
    value = message["weight"]
    if role != "assistant":
        problems.add(line, f"{label}.weight", "only assistant messages can carry a weight (it says whether the turn is trained)")
        return None
    # bool is an int subclass in Python; `true` almost always means a misunderstanding of the field.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in (0, 1):
        problems.add(line, f"{label}.weight", f"must be 0 or 1, got {json.dumps(value)}")
        return None
    return int(value)


def _messages(messages: Any, label: str, line: int, problems: _Problems, mode: str = "chat") -> list[dict] | None:
    """Validate a message list. mode: chat (a whole conversation), prompt (ends with a user turn, for
    preference/KTO prompts) or answer (assistant messages only: chosen, rejected, completion)."""
    if not isinstance(messages, list):
        problems.add(line, label, f"must be a list of messages, got {_type_name(messages)}")
        return None
    if not messages:
        problems.add(line, label, "is empty")
        return None
    normalised: list[dict] = []
    ok = True
    for i, message in enumerate(messages):
        where = f"{label}[{i}]"
        if not isinstance(message, dict):
            problems.add(line, where, f"must be an object with 'role' and 'content', got {_type_name(message)}")
            ok = False
            continue
        allowed = MESSAGE_KEYS if mode == "chat" else ("role", "content")
        unknown = sorted(set(message) - set(allowed))
        if unknown:
            problems.add(line, where, f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                         f"(allowed: {', '.join(allowed)})")
            ok = False
        role = message.get("role")
        if "role" not in message:
            problems.add(line, f"{where}.role", "missing")
            ok = False
        elif role not in ROLES:
            problems.add(line, f"{where}.role", f"unknown role {json.dumps(role)} (allowed: {', '.join(ROLES)})")
            ok = False
        elif mode == "answer" and role != "assistant":
            problems.add(line, f"{where}.role", f"must be 'assistant' in a response, got {role!r}")
            ok = False
        content = _text_field(message, "content", line, problems, label=f"{where}.content")
        weight = _weight(message, where, role, line, problems) if mode == "chat" else None
        if content is None or ("weight" in message and weight is None):
            ok = False
            continue
        out = {"role": role, "content": content}
        if weight is not None:
            out["weight"] = weight
        normalised.append(out)
    if not ok:
        return None
    if mode != "answer" and not _check_order([m["role"] for m in normalised], line, problems, label, mode):
        return None
    return normalised


def _validate_chat(obj: dict, line: int, problems: _Problems) -> dict | None:
    if "messages" not in obj:
        problems.add(line, "messages", "missing")
        return None
    messages = _messages(obj["messages"], "messages", line, problems)
    return None if messages is None else {"messages": messages}


def _check_order(roles: list[str], line: int, problems: _Problems, label: str = "messages",
                 mode: str = "chat") -> bool:
    """System only first; then user and assistant alternate, starting with user, ending with assistant
    (a chat) or with user (a prompt awaiting the answer)."""
    ok = True
    turns = roles[1:] if roles and roles[0] == "system" else roles
    offset = len(roles) - len(turns)
    for i, role in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            where = f"{label}[{i + offset}].role"
            if role == "system":
                problems.add(line, where, "a system message is only allowed as the first message")
            else:
                problems.add(line, where, f"roles out of order: expected {expected!r} here, got {role!r} "
                             "(user and assistant must alternate, starting with user)")
            return False
    if mode == "prompt":
        if not turns or turns[-1] != "user":
            problems.add(line, label, "a prompt must end with a user message (the response answers it)")
            ok = False
    elif "assistant" not in turns:
        problems.add(line, label, "has no assistant message, so there is nothing to learn from this row")
        ok = False
    elif turns[-1] != "assistant":
        problems.add(line, f"{label}[{len(roles) - 1}]", "the conversation must end with an assistant message "
                     "(a trailing user message has no answer to learn)")
        ok = False
    return ok


def _validate_alpaca(obj: dict, line: int, problems: _Problems) -> dict | None:
    instruction = _text_field(obj, "instruction", line, problems)
    output = _text_field(obj, "output", line, problems)
    extra = _text_field(obj, "input", line, problems, required=False, allow_empty=True)
    system = _text_field(obj, "system", line, problems, required=False)
    bad_optional = ("input" in obj and extra is None) or ("system" in obj and system is None)
    if instruction is None or output is None or bad_optional:
        return None
    user = instruction + ("\n\n" + extra if extra and extra.strip() else "")
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return {"messages": messages}


def _validate_prompt_completion(obj: dict, line: int, problems: _Problems) -> dict | None:
    prompt = _text_field(obj, "prompt", line, problems)
    completion = _text_field(obj, "completion", line, problems)
    if prompt is None or completion is None:
        return None
    return {"prompt": prompt, "completion": completion}


def _prompt_side(obj: dict, key: str, label: str, line: int, problems: _Problems) -> tuple[Any, bool] | None:
    """A preference/KTO prompt: a string, or a message list ending with a user turn. Returns (value,
    conversational) or None."""
    if key not in obj:
        problems.add(line, label, "missing")
        return None
    value = obj[key]
    if isinstance(value, list):
        messages = _messages(value, label, line, problems, mode="prompt")
        return None if messages is None else (messages, True)
    text = _text_field(obj, key, line, problems, label=label)
    return None if text is None else (text, False)


def _answer_side(obj: dict, key: str, label: str, line: int, problems: _Problems, conversational: bool | None) -> Any:
    """chosen / rejected / completion: the same shape as the prompt (a string under a conversational prompt
    becomes one assistant message; a message list under a plain prompt cannot be trained and is an error)."""
    if key not in obj:
        problems.add(line, label, "missing")
        return None
    value = obj[key]
    if isinstance(value, list):
        if conversational is False:
            problems.add(line, label, "is a message list but the prompt is a plain string; use the same shape for both")
            return None
        return _messages(value, label, line, problems, mode="answer")
    text = _text_field(obj, key, line, problems, label=label)
    if text is None:
        return None
    return [{"role": "assistant", "content": text}] if conversational else text


def _validate_preference(obj: dict, line: int, problems: _Problems) -> dict | None:
    if any(k in obj for k in ("input", "preferred_output", "non_preferred_output")):
        # OpenAI's fine-tuning DPO shape: always conversational.
        source = obj.get("input")
        if not isinstance(source, dict):
            problems.add(line, "input", "missing" if source is None else f"must be an object with 'messages', got {_type_name(source)}")
            prompt = None
        elif "messages" not in source:
            problems.add(line, "input.messages", "missing")
            prompt = None
        else:
            prompt = (_messages(source["messages"], "input.messages", line, problems, mode="prompt"), True)
            prompt = None if prompt[0] is None else prompt
        chosen = _answer_side(obj, "preferred_output", "preferred_output", line, problems, True)
        rejected = _answer_side(obj, "non_preferred_output", "non_preferred_output", line, problems, True)
        reject_label = "non_preferred_output"
    else:
        prompt = _prompt_side(obj, "prompt", "prompt", line, problems)
        shape = None if prompt is None else prompt[1]
        chosen = _answer_side(obj, "chosen", "chosen", line, problems, shape)
        rejected = _answer_side(obj, "rejected", "rejected", line, problems, shape)
        reject_label = "rejected"
    if prompt is None or chosen is None or rejected is None:
        return None
    if chosen == rejected:
        problems.add(line, reject_label, "is identical to the chosen response (there is nothing to prefer)")
        return None
    return {"prompt": prompt[0], "chosen": chosen, "rejected": rejected}


def _validate_kto(obj: dict, line: int, problems: _Problems) -> dict | None:
    prompt = _prompt_side(obj, "prompt", "prompt", line, problems)
    completion = _answer_side(obj, "completion", "completion", line, problems, None if prompt is None else prompt[1])
    label = obj.get("label")
    if "label" not in obj:
        problems.add(line, "label", "missing")
    elif not isinstance(label, bool):
        problems.add(line, "label", f"must be true or false (is the completion desirable?), got {json.dumps(label)}")
    if prompt is None or completion is None or not isinstance(label, bool):
        return None
    return {"prompt": prompt[0], "completion": completion, "label": label}


def _validate_text(obj: dict, line: int, problems: _Problems) -> dict | None:
    text = _text_field(obj, "text", line, problems)
    return None if text is None else {"text": text}


_VALIDATORS = {"chat": _validate_chat, "alpaca": _validate_alpaca, "prompt_completion": _validate_prompt_completion,
               "preference": _validate_preference, "kto": _validate_kto, "text": _validate_text}
_USED_FIELDS = {
    "chat": {"messages"},
    "alpaca": {"instruction", "input", "output", "system"},
    "prompt_completion": {"prompt", "completion"},
    "preference": {"prompt", "chosen", "rejected", "input", "preferred_output", "non_preferred_output"},
    "kto": {"prompt", "completion", "label"},
    "text": {"text"},
}


def _meta(obj: dict, row_format: str) -> dict:
    meta = dict(obj["meta"]) if isinstance(obj.get("meta"), dict) else {}
    meta.update((k, v) for k, v in obj.items() if k not in _USED_FIELDS[row_format] and k != "meta")
    if "meta" in obj and not isinstance(obj["meta"], dict):
        meta["meta"] = obj["meta"]
    extra_input = {k: v for k, v in obj["input"].items() if k != "messages"} if isinstance(obj.get("input"), dict) else {}
    if row_format == "preference" and extra_input:
        meta["input"] = extra_input  # e.g. OpenAI's `tools`, kept so a round trip loses nothing
    return meta


def _line_ranges(lines: list[int], limit: int = 12) -> str:
    """[1,2,3,7,9,10] -> '1-3, 7, 9-10' so a mixed-format report stays readable on big files."""
    spans: list[str] = []
    start = prev = lines[0]
    for n in lines[1:] + [None]:  # type: ignore[list-item]
        if n is not None and n == prev + 1:
            prev = n
            continue
        spans.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    shown = ", ".join(spans[:limit])
    return shown + (f", ... ({len(spans) - limit} more ranges)" if len(spans) > limit else "")


def _id_key(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) else json.dumps(value, sort_keys=True)


def read_objects(file: Path, shown: str) -> list[tuple[int, dict]]:
    """(line, object) pairs of any file type the data commands read, with no row-format check: for files that name
    their own fields (eval task data, safety probes). Every problem of the file comes in one DataError."""
    problems = _Problems(shown)
    try:
        records = read_records(file, file_type(file), problems)
    except OSError as exc:
        raise DataError(f"cannot read {shown}: {exc.strerror or exc}") from exc
    for line, obj in records:
        if not isinstance(obj, dict):
            problems.add(line, None, f"each row must be a JSON object, got {_type_name(obj)}")
    if not records and not problems.items:
        problems.add(None, None, "contains no rows")
    problems.raise_if_any(hint=None)
    return records


def load_dataset_file(path: str, format: str = "auto", *, skip_invalid: bool = False,
                      progress: bool = False) -> LoadedData:
    """Read, validate and normalise a dataset file (or saved datasets folder).

    Raises one DataError listing every problem. With `skip_invalid`, rows with problems are left out and
    described in `LoadedData.rejected` instead; only file-level problems (unreadable file, no rows) still raise.
    """
    if format != "auto" and format not in FORMATS:
        raise DataError(f"unknown data format {format!r}", hint=f"use one of: auto, {', '.join(FORMATS)}")
    file = resolve_data_path(path)
    kind = file_type(file)
    problems = _Problems(str(path))
    try:
        records = read_records(file, kind, problems)
        sha = content_sha256(file)
    except OSError as exc:
        raise DataError(f"cannot read data file {path}: {exc.strerror or exc}") from exc

    detected: dict[str, list[int]] = {}
    per_record: list[tuple[int, dict, str]] = []
    undetected: list[tuple[int, Any]] = []
    by_line: dict[int, Any] = {}
    for line, obj in records:
        if skip_invalid:
            by_line[line] = obj
        if not isinstance(obj, dict):
            problems.add(line, None, f"each row must be a JSON object, got {_type_name(obj)}")
            continue
        row_format = format if format != "auto" else detect_format(obj)
        if row_format is None:
            undetected.append((line, obj))
            continue
        detected.setdefault(row_format, []).append(line)
        per_record.append((line, obj, row_format))
    only = next(iter(detected)) if len(detected) == 1 else None
    for line, obj in undetected:
        if only is not None and _USED_FIELDS[only] & set(obj):
            # The rest of the file says which format this is: name the missing field, not "unknown format".
            detected[only].append(line)
            per_record.append((line, obj, only))
        else:
            keys = ", ".join(map(repr, sorted(obj))) or "none"
            problems.add(line, None, "cannot tell the row format: expected 'messages' (chat), 'instruction' + "
                         "'output' (alpaca), 'prompt' + 'completion' (prompt_completion; with a boolean 'label': "
                         "kto), 'chosen' + 'rejected' (preference) or 'text' (text); found keys " + keys)
    per_record.sort(key=lambda item: item[0])

    if len(detected) > 1:
        ranked = sorted(detected.items(), key=lambda kv: -len(kv[1]))
        if skip_invalid:
            # The majority format wins; the odd rows out are rejected one by one like any other bad row.
            majority = ranked[0][0]
            for name, lines in ranked[1:]:
                for line in lines:
                    problems.add(line, None, f"row format {name} differs from the file's majority format {majority}")
            per_record = [r for r in per_record if r[2] == majority]
            detected = {majority: detected[majority]}
        else:
            parts = [f"{name} on line{'s' if len(lines) > 1 else ''} {_line_ranges(lines)} ({len(lines)} rows)"
                     for name, lines in ranked]
            problems.add(None, None, "mixed row formats in one file: " + "; ".join(parts))

    rows: list[dict] = []
    line_numbers: list[int] = []
    first_id: dict[Any, int] = {}
    if progress:
        from tuneforge.data.text import progress_iter

        per_record = progress_iter(per_record, total=len(per_record), description="validate", enabled=True)  # type: ignore[assignment]
    for line, obj, row_format in per_record:
        row = _VALIDATORS[row_format](obj, line, problems)
        if row is None:
            continue
        row["meta"] = _meta(obj, row_format)
        if "id" in row["meta"]:
            key = _id_key(row["meta"]["id"])
            if key in first_id:
                problems.add(line, "id", f"duplicate id {json.dumps(row['meta']['id'])} (first used on line {first_id[key]})")
                continue
            first_id[key] = line
        rows.append(row)
        line_numbers.append(line)

    if not records and not problems.items:
        problems.add(None, None, "contains no rows")
    rejected: list[dict] = []
    if skip_invalid and problems.items:
        file_level = [item for item in problems.items if item[0] is None]
        if file_level:
            problems.items = file_level
            problems.raise_if_any()
        rejected = _rejected_rows(file, kind, problems, by_line)
        bad = {r["line"] for r in rejected}
        keep = [k for k, line in enumerate(line_numbers) if line not in bad]
        rows, line_numbers = [rows[k] for k in keep], [line_numbers[k] for k in keep]
    else:
        problems.raise_if_any()
    chosen = format if format != "auto" else (next(iter(detected)) if detected else "chat")
    return LoadedData(path=str(path), format=chosen, rows=rows, line_numbers=line_numbers, sha256=sha,
                      file_type=kind, rejected=rejected)


def _rejected_rows(file: Path, kind: str, problems: _Problems, by_line: dict[int, Any]) -> list[dict]:
    reasons: dict[int, list[str]] = {}
    for line, fld, problem in problems.items:
        reasons.setdefault(line, []).append(f"{fld}: {problem}" if fld else problem)  # type: ignore[arg-type]
    out = []
    for line in sorted(reasons):
        entry: dict[str, Any] = {"line": line, "reasons": reasons[line]}
        if line in by_line:
            entry["row"] = by_line[line]
        else:
            # Unparseable (bad JSON, bad bytes): keep the text so the user can repair it from the side file.
            entry["raw"] = raw_line(file, kind, line)
        out.append(entry)
    return out
