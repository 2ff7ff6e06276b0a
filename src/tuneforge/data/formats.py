"""Dataset files: locate, parse, validate and normalise them.

Three row formats are accepted and normalised so that everything downstream sees only two shapes:

    chat               {"messages": [{"role": ..., "content": ..., "weight"?: 0|1}, ...]}
    alpaca             {"instruction", "output", "input"?, "system"?}  -> {"messages": [...]}
    prompt_completion  {"prompt", "completion"}                         -> {"prompt", "completion"}

Fields a format does not use (id, task, ...) are kept under ``row["meta"]`` so nothing is lost.

Validation never stops at the first problem: a dataset with a systematic defect usually has it on many
lines, and a user who fixes one line per run would rerun the whole pipeline dozens of times. All problems
are collected with their file, line and field, and raised together as one DataError.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from tuneforge.errors import DataError

FORMATS = ("chat", "alpaca", "prompt_completion")
ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = ("role", "content", "weight")
QUICKSTART_PREFIX = "quickstart:"
MAX_SHOWN_PROBLEMS = 50

_FORMAT_HINT = (
    "each row must be a JSON object in one of the formats: chat {\"messages\": [{\"role\": \"user\", "
    "\"content\": ...}, {\"role\": \"assistant\", \"content\": ...}]}, alpaca {\"instruction\": ..., "
    "\"input\": ... (optional), \"output\": ...} or prompt_completion {\"prompt\": ..., \"completion\": ...}"
)


@dataclass
class LoadedData:
    path: str
    format: str
    rows: list[dict]
    line_numbers: list[int]
    sha256: str

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


def _quickstart_files() -> list[str]:
    root = resources.files("tuneforge").joinpath("assets", "quickstart")
    try:
        return sorted(p.name for p in root.iterdir() if p.name.endswith((".jsonl", ".json")))
    except (FileNotFoundError, NotADirectoryError):
        return []


def resolve_data_path(path: str) -> Path:
    """Turn a user's data reference into an existing file path.

    ``quickstart:NAME`` refers to the dataset bundled with the package, so the quickstart works from any
    working directory and from an installed wheel.
    """
    if not isinstance(path, str) or not path.strip():
        raise DataError("data path is empty", hint="give a JSONL file path or e.g. `quickstart:train.jsonl`")
    if path.startswith(QUICKSTART_PREFIX):
        name = path[len(QUICKSTART_PREFIX):]
        available = _quickstart_files()
        # A bare name only: a path separator would let `quickstart:` reach outside the bundled folder.
        if name not in available:
            raise DataError(
                f"bundled dataset {path!r} does not exist",
                hint="available: " + (", ".join(QUICKSTART_PREFIX + n for n in available) or "none (broken install?)"),
            )
        resolved = Path(str(resources.files("tuneforge").joinpath("assets", "quickstart", name)))
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
    if not resolved.is_file():
        raise DataError(f"data path is not a file: {path}", hint="point to a .jsonl (or .json) file, not a folder")
    return resolved


# -------------------------------------------------------------------------------------------- parsing


def _parse_jsonl(data: bytes, problems: _Problems) -> list[tuple[int, Any]]:
    records: list[tuple[int, Any]] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # editors on Windows add a UTF-8 BOM; it is not part of the first object
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.add(number, None, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})")
            continue
        if not text.strip():
            continue
        try:
            records.append((number, json.loads(text)))
        except json.JSONDecodeError as exc:
            problems.add(number, None, f"invalid JSON: {exc.msg} (column {exc.colno})")
    return records


def _parse_json_array(data: bytes, problems: _Problems) -> list[tuple[int, Any]]:
    """Parse a `.json` file holding a list, remembering the line on which each element starts."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problems.add(line, None, f"not valid UTF-8 (byte 0x{data[exc.start]:02x})")
        return []
    decoder = json.JSONDecoder()
    line_of = lambda pos: text.count("\n", 0, pos) + 1  # noqa: E731
    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] != "[":
        problems.add(line_of(pos), None, "a .json data file must hold a list of objects (use .jsonl for one per line)")
        return []
    records: list[tuple[int, Any]] = []
    pos = _skip_ws(text, pos + 1)
    if pos < len(text) and text[pos] == "]":
        return records
    while True:
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            problems.add(exc.lineno, None, f"invalid JSON: {exc.msg} (column {exc.colno})")
            return records  # the rest of the array cannot be located reliably after a syntax error
        records.append((line_of(pos), value))
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            if _skip_ws(text, pos + 1) != len(text):
                problems.add(line_of(pos), None, "unexpected content after the closing ']'")
            return records
        problems.add(line_of(pos), None, "invalid JSON: expected ',' or ']' after a list element")
        return records


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


# ----------------------------------------------------------------------------------------- validation


def detect_format(obj: dict) -> str | None:
    if "messages" in obj:
        return "chat"
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    if "prompt" in obj and "completion" in obj:
        return "prompt_completion"
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


def _validate_chat(obj: dict, line: int, problems: _Problems) -> dict | None:
    if "messages" not in obj:
        problems.add(line, "messages", "missing")
        return None
    messages = obj["messages"]
    if not isinstance(messages, list):
        problems.add(line, "messages", f"must be a list of messages, got {_type_name(messages)}")
        return None
    if not messages:
        problems.add(line, "messages", "is empty")
        return None
    normalised: list[dict] = []
    ok = True
    for i, message in enumerate(messages):
        label = f"messages[{i}]"
        if not isinstance(message, dict):
            problems.add(line, label, f"must be an object with 'role' and 'content', got {_type_name(message)}")
            ok = False
            continue
        unknown = sorted(set(message) - set(MESSAGE_KEYS))
        if unknown:
            problems.add(line, label, f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                         f"(allowed: {', '.join(MESSAGE_KEYS)})")
            ok = False
        role = message.get("role")
        if "role" not in message:
            problems.add(line, f"{label}.role", "missing")
            ok = False
        elif role not in ROLES:
            problems.add(line, f"{label}.role", f"unknown role {json.dumps(role)} (allowed: {', '.join(ROLES)})")
            ok = False
        content = _text_field(message, "content", line, problems, label=f"{label}.content")
        weight = _weight(message, label, role, line, problems)
        if content is None or ("weight" in message and weight is None):
            ok = False
            continue
        out = {"role": role, "content": content}
        if weight is not None:
            out["weight"] = weight
        normalised.append(out)
    if not ok:
        return None
    if not _check_order([m["role"] for m in normalised], line, problems):
        return None
    return {"messages": normalised}


def _check_order(roles: list[str], line: int, problems: _Problems) -> bool:
    """System only first; then user and assistant alternate, starting with user, ending with assistant."""
    ok = True
    turns = roles[1:] if roles and roles[0] == "system" else roles
    offset = len(roles) - len(turns)
    for i, role in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            where = f"messages[{i + offset}].role"
            if role == "system":
                problems.add(line, where, "a system message is only allowed as the first message")
            else:
                problems.add(line, where, f"roles out of order: expected {expected!r} here, got {role!r} "
                             "(user and assistant must alternate, starting with user)")
            return False
    if "assistant" not in turns:
        problems.add(line, "messages", "has no assistant message, so there is nothing to learn from this row")
        ok = False
    elif turns[-1] != "assistant":
        problems.add(line, f"messages[{len(roles) - 1}]", "the conversation must end with an assistant message "
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


_VALIDATORS = {"chat": _validate_chat, "alpaca": _validate_alpaca, "prompt_completion": _validate_prompt_completion}
_USED_FIELDS = {
    "chat": {"messages"},
    "alpaca": {"instruction", "input", "output", "system"},
    "prompt_completion": {"prompt", "completion"},
}


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


def load_dataset_file(path: str, format: str = "auto") -> LoadedData:
    """Read, validate and normalise a dataset file; raise one DataError listing every problem in it."""
    if format != "auto" and format not in FORMATS:
        raise DataError(f"unknown data format {format!r}", hint=f"use one of: auto, {', '.join(FORMATS)}")
    file = resolve_data_path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read data file {path}: {exc.strerror or exc}") from exc
    problems = _Problems(str(path))
    records = _parse_json_array(data, problems) if file.suffix.lower() == ".json" else _parse_jsonl(data, problems)

    detected: dict[str, list[int]] = {}
    per_record: list[tuple[int, dict, str]] = []
    for line, obj in records:
        if not isinstance(obj, dict):
            problems.add(line, None, f"each row must be a JSON object, got {_type_name(obj)}")
            continue
        row_format = format if format != "auto" else detect_format(obj)
        if row_format is None:
            keys = ", ".join(map(repr, sorted(obj))) or "none"
            problems.add(line, None, "cannot tell the row format: expected 'messages' (chat), 'instruction' + "
                         f"'output' (alpaca) or 'prompt' + 'completion' (prompt_completion); found keys {keys}")
            continue
        detected.setdefault(row_format, []).append(line)
        per_record.append((line, obj, row_format))

    if len(detected) > 1:
        parts = [f"{name} on line{'s' if len(lines) > 1 else ''} {_line_ranges(lines)} ({len(lines)} rows)"
                 for name, lines in sorted(detected.items(), key=lambda kv: -len(kv[1]))]
        problems.add(None, None, "mixed row formats in one file: " + "; ".join(parts))

    rows: list[dict] = []
    line_numbers: list[int] = []
    for line, obj, row_format in per_record:
        row = _VALIDATORS[row_format](obj, line, problems)
        if row is None:
            continue
        row["meta"] = {k: v for k, v in obj.items() if k not in _USED_FIELDS[row_format]}
        rows.append(row)
        line_numbers.append(line)

    if not records and not problems.items:
        problems.add(None, None, "contains no rows")
    problems.raise_if_any()
    chosen = format if format != "auto" else next(iter(detected))
    return LoadedData(path=str(path), format=chosen, rows=rows, line_numbers=line_numbers,
                      sha256=hashlib.sha256(data).hexdigest())
