"""Dataset files: locate, parse, validate and normalise them.

Row formats and their normalised shapes (what every later stage sees):

    chat               {"messages": [{"role": ..., "content": ..., "weight"?: 0|1}, ...]}; roles system, user,
                       assistant (with "tool_calls") and tool (messages.py has the message rules)
    alpaca             {"instruction", "output", "input"?, "system"?}  -> {"messages": [...]}
    sharegpt           {"conversations": [{"from": "human"|"gpt"|"system"|"tool", "value"}], "system"?}
                                                                        -> {"messages": [...]}
    prompt_completion  {"prompt", "completion"}                         -> {"prompt", "completion"}
    preference         {"prompt", "chosen", "rejected"}; OpenAI's DPO shape {"input": {"messages"},
                       "preferred_output", "non_preferred_output"}; or TRL's implicit prompt: "chosen" and
                       "rejected" as whole conversations, their shared opening being the prompt
                                                                        -> {"prompt", "chosen", "rejected"}
    kto                {"prompt", "completion", "label": bool}          -> {"prompt", "completion", "label"}
    text               {"text"}                                         -> {"text"}

Preference and KTO rows are conversational (prompt = message list ending with a user turn, chosen /
rejected / completion = list of assistant messages) when the source is, and plain strings when the source
is; a string answer under a conversational prompt is wrapped as one assistant message.

Fields a format does not use (id, task, ...) are kept under ``row["meta"]`` so nothing is lost. A source
row may carry its own "meta" object: its keys are merged into row["meta"], so a normalised row written back
as JSONL (what `clean`, `split`, `mix` and `convert` do) reads back as exactly the same row. Every such key
other than `id` is reported in `LoadedData.warnings` (with a "did you mean" for a near-miss of a format's
field, e.g. `mesages`): a typo must not silently turn a field into metadata.

A KTO label may be spelt true/false, 1/0, "true"/"false", "1"/"0" or "yes"/"no" (readers.kto_label); a
prompt + completion row with such a label is a KTO row.

File types (JSONL, JSON, CSV, Parquet, saved `datasets` folders) and what "line" means for each: readers.py.

Validation never stops at the first problem: a dataset with a systematic defect usually has it on many
lines, and a user who fixes one line per run would rerun the whole pipeline dozens of times. All problems
are collected with their file, line and field, and raised together as one DataError.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from tuneforge.data.messages import (
    ROLES,  # noqa: F401 - part of this module's interface
    sharegpt_messages,
    split_implicit_prompt,
    text_field,
    type_name,
    validate_messages,
)
from tuneforge.data.readers import (
    LABEL_SPELLINGS,
    content_sha256,
    file_type,
    is_saved_dataset,
    kto_label,
    parse_json_array,
    parse_jsonl,
    raw_line,
    read_records,
)
from tuneforge.errors import DataError

# Local names kept from before message validation moved to messages.py.
_text_field, _type_name, _messages = text_field, type_name, validate_messages

FORMATS = ("chat", "alpaca", "sharegpt", "prompt_completion", "preference", "kto", "text")
#: Formats normalised to {"messages": [...]}: rendered with the chat template, mixed and converted as chat.
CHAT_FORMATS = ("chat", "alpaca", "sharegpt")
QUICKSTART_PREFIX = "quickstart:"
#: Prefixes naming data bundled with the package -> their folder under tuneforge/assets. `samples:` holds the
#: preference/kto/text/multitask samples derived from the quickstart task (scripts/make_objective_samples.py).
BUNDLED_PREFIXES = {QUICKSTART_PREFIX: "quickstart", "samples:": "samples"}
MAX_SHOWN_PROBLEMS = 50

_FORMAT_HINT = (
    "each row must be a JSON object in one of the formats: chat {\"messages\": [{\"role\": \"user\", "
    "\"content\": ...}, {\"role\": \"assistant\", \"content\": ...}]}, alpaca {\"instruction\": ..., "
    "\"input\": ... (optional), \"output\": ...}, sharegpt {\"conversations\": [{\"from\": \"human\", \"value\": "
    "...}, {\"from\": \"gpt\", \"value\": ...}]}, prompt_completion {\"prompt\": ..., \"completion\": ...}, "
    "preference {\"prompt\", \"chosen\", \"rejected\"} (or OpenAI's input/preferred_output/non_preferred_output, or "
    "TRL's chosen/rejected conversations with a shared opening), "
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
    # Not errors, but things a user should see: "file:line: key: ..." for keys kept under meta, blank lines.
    warnings: list[str] = field(default_factory=list)
    blank_lines: list[int] = field(default_factory=list)

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
    if "conversations" in obj:
        return "sharegpt"
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    if ("chosen" in obj and "rejected" in obj) or "preferred_output" in obj or "non_preferred_output" in obj:
        return "preference"
    if "prompt" in obj and "completion" in obj:
        # Only a boolean label (in any of its spellings) makes a KTO row; another label ("positive", 3) is
        # ordinary metadata of a prompt_completion row.
        return "kto" if kto_label(obj.get("label")) is not None else "prompt_completion"
    if "text" in obj:
        return "text"
    return None


def _validate_chat(obj: dict, line: int, problems: _Problems) -> dict | None:
    if "messages" not in obj:
        problems.add(line, "messages", "missing")
        return None
    messages = _messages(obj["messages"], "messages", line, problems)
    return None if messages is None else {"messages": messages}


def _validate_sharegpt(obj: dict, line: int, problems: _Problems) -> dict | None:
    messages = sharegpt_messages(obj, line, problems)
    return None if messages is None else {"messages": messages}


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
            problems.add(line, "input", "missing" if source is None
                         else f"must be an object with 'messages', got {_type_name(source)}")
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
    elif "prompt" not in obj and isinstance(obj.get("chosen"), list) and isinstance(obj.get("rejected"), list):
        # TRL's implicit prompt: two whole conversations whose shared opening is the prompt.
        split = split_implicit_prompt(obj, line, problems)
        return None if split is None else dict(zip(("prompt", "chosen", "rejected"), split))
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
    label = kto_label(obj.get("label"))
    if "label" not in obj:
        problems.add(line, "label", "missing")
    elif label is None:
        spellings = ", ".join(f'"{w}"' for w in LABEL_SPELLINGS)
        problems.add(line, "label", f"must be true or false (is the completion desirable?); also accepted: 1, 0, "
                     f"{spellings}; got {json.dumps(obj['label'], ensure_ascii=False)}")
    if prompt is None or completion is None or label is None:
        return None
    return {"prompt": prompt[0], "completion": completion, "label": label}


def _validate_text(obj: dict, line: int, problems: _Problems) -> dict | None:
    text = _text_field(obj, "text", line, problems)
    return None if text is None else {"text": text}


_VALIDATORS = {"chat": _validate_chat, "alpaca": _validate_alpaca, "sharegpt": _validate_sharegpt,
               "prompt_completion": _validate_prompt_completion, "preference": _validate_preference,
               "kto": _validate_kto, "text": _validate_text}
_USED_FIELDS = {
    "chat": {"messages"},
    "sharegpt": {"conversations", "system"},
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
    extra_input = ({k: v for k, v in obj["input"].items() if k != "messages"}
                   if isinstance(obj.get("input"), dict) else {})
    if row_format == "preference" and extra_input:
        meta["input"] = extra_input  # e.g. OpenAI's `tools`, kept so a round trip loses nothing
    return meta


def _misspelt(key: str) -> str | None:
    """The format field `key` is probably a typo of (`mesages` -> `messages`), if any."""
    known = sorted(set().union(*_USED_FIELDS.values()))
    if key in known:
        return None
    guess = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
    return guess[0] if guess else None


_QUIET_META = {"meta", "id"}  # expected beside any format: no warning when kept under meta


def _meta_warnings(path: str, format_of: list[tuple[int, dict, str]]) -> list[str]:
    """One warning per key that is not a field of its row's format: where it occurs, and a guess when it looks
    like a misspelt field."""
    lines_of: dict[str, list[int]] = {}
    for line, obj, row_format in format_of:
        for key in obj:
            if key not in _USED_FIELDS[row_format] and key not in _QUIET_META:
                lines_of.setdefault(key, []).append(line)
    out = []
    for key, lines in sorted(lines_of.items(), key=lambda kv: kv[1][0]):
        guess = _misspelt(key)
        hint = f"; did you mean {guess!r}?" if guess else ""
        where = f"line{'s' if len(lines) > 1 else ''} {_line_ranges(lines)}"
        out.append(f"{path}:{lines[0]}: {key}: not a field of the row format, kept under meta ({len(lines)} "
                   f"row{'s' if len(lines) > 1 else ''}: {where}){hint}")
    return out


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
    blank_lines: list[int] = []
    try:
        records = read_records(file, kind, problems, blank_lines)
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
    if "kto" in detected and "prompt_completion" in detected:
        # A KTO file's row whose label is not a boolean spelling ("maybe", 2) is a KTO row with a bad label,
        # not a prompt_completion row that happens to carry one.
        labelled = {line for line, obj, fmt in per_record if fmt == "prompt_completion" and "label" in obj}
        per_record = [(line, obj, "kto" if line in labelled else fmt) for line, obj, fmt in per_record]
        detected["kto"] += sorted(labelled)
        detected["prompt_completion"] = [n for n in detected["prompt_completion"] if n not in labelled]
        if not detected["prompt_completion"]:
            del detected["prompt_completion"]
    only = next(iter(detected)) if len(detected) == 1 else None
    for line, obj in undetected:
        if only is not None and _USED_FIELDS[only] & set(obj):
            # The rest of the file says which format this is: name the missing field, not "unknown format".
            detected[only].append(line)
            per_record.append((line, obj, only))
        else:
            keys = ", ".join(map(repr, sorted(obj))) or "none"
            guesses = [f"{k!r} -> {_misspelt(k)!r}" for k in sorted(obj) if _misspelt(k)]
            problems.add(line, None, "cannot tell the row format: expected 'messages' (chat), 'conversations' "
                         "(sharegpt), 'instruction' + 'output' (alpaca), 'prompt' + 'completion' (prompt_completion; "
                         "with a boolean 'label': kto), 'chosen' + 'rejected' (preference) or 'text' (text); found "
                         "keys " + keys
                         + (f" (misspelt? {', '.join(guesses)})" if guesses else ""))
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
    validating = per_record
    if progress:
        from tuneforge.data.text import progress_iter

        validating = progress_iter(per_record, total=len(per_record), description="validate", enabled=True)  # type: ignore[assignment]
    for line, obj, row_format in validating:
        row = _VALIDATORS[row_format](obj, line, problems)
        if row is None:
            continue
        row["meta"] = _meta(obj, row_format)
        if "id" in row["meta"]:
            key = _id_key(row["meta"]["id"])
            if key in first_id:
                problems.add(line, "id",
                             f"duplicate id {json.dumps(row['meta']['id'])} (first used on line {first_id[key]})")
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
    kept = set(line_numbers)
    warnings = _meta_warnings(str(path), [item for item in per_record if item[0] in kept])
    return LoadedData(path=str(path), format=chosen, rows=rows, line_numbers=line_numbers, sha256=sha,
                      file_type=kind, rejected=rejected, warnings=warnings, blank_lines=blank_lines)


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
