"""File types: JSONL, JSON, CSV, Parquet and saved Hugging Face `datasets` folders -> (line, record) pairs.

Every reader yields `(line, record)` where `line` is what an error message should point a user at:

    JSONL    the physical line (1-based; blank lines are skipped but still counted)
    JSON     the line on which the list element starts
    CSV      the spreadsheet row number: the header is row 1, the first data row is row 2, so the number
             matches what a spreadsheet shows on the left
    Parquet  the 1-based data row
    folder   the 1-based data row of a `Dataset.save_to_disk` folder

Readers never raise on a bad record: they report it through `problems.add(line, field, message)` and go on,
so validation can list every problem of a file at once.

CSV cells are strings. Two conversions make CSV usable for every row format: a cell that starts with `[` or
`{` and parses as JSON becomes that value (message lists), and in a `label` column the boolean spellings of
`kto_label` become booleans (KTO). An empty cell counts as an absent field.

What readers report besides records: a JSON object with the same key twice is a problem (JSON parsers keep the
last value and silently drop the first), and blank JSONL lines / blank CSV rows are listed in `blank_lines` when
the caller passes a list, so a row count that differs from the line count can be explained.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any, Protocol

FILE_TYPES = ("jsonl", "json", "csv", "parquet", "hf_dataset")
#: The spellings of a KTO label, wherever it comes from (JSON booleans, numbers and strings; CSV cells).
LABEL_SPELLINGS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def kto_label(value: Any) -> bool | None:
    """A KTO label as a bool: true/false, 1/0, or the strings of LABEL_SPELLINGS (any case); None otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return LABEL_SPELLINGS.get(value.strip().lower())
    return None


class ProblemSink(Protocol):
    def add(self, line: int | None, fld: str | None, problem: str) -> None: ...


def file_type(path: Path) -> str:
    """Which reader a path needs, by suffix (anything unknown is read as JSONL, the common case)."""
    if path.is_dir():
        return "hf_dataset"
    suffix = path.suffix.lower()
    return {".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}.get(suffix, "jsonl")


def is_saved_dataset(path: Path) -> bool:
    """A folder written by `Dataset.save_to_disk` (or `DatasetDict.save_to_disk`)."""
    return path.is_dir() and any((path / name).is_file() for name in ("state.json", "dataset_dict.json"))


def content_sha256(path: Path) -> str:
    """sha256 of a file's bytes; for a folder, of every file's relative name and bytes in sorted order, so a
    run manifest pins a saved dataset folder as firmly as a single file."""
    if path.is_file():
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(file.relative_to(path)).encode("utf-8") + b"\0")
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def read_records(path: Path, kind: str, problems: ProblemSink,
                 blank_lines: list[int] | None = None) -> list[tuple[int, Any]]:
    if kind == "json":
        return parse_json_array(path.read_bytes(), problems)
    if kind == "csv":
        return _read_csv(path, problems, blank_lines)
    if kind == "parquet":
        return _read_parquet(path, problems)
    if kind == "hf_dataset":
        return _read_saved_dataset(path, problems)
    return parse_jsonl(path.read_bytes(), problems, blank_lines)


def raw_line(path: Path, kind: str, line: int) -> str | None:
    """The physical text of `line` for line-based files (for the rejected-rows side file), else None."""
    if kind not in ("jsonl", "json"):
        return None
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == line:
                return raw.rstrip(b"\r\n").decode("utf-8", errors="replace")
    return None


# ------------------------------------------------------------------------------------------- JSON(L)


class _KeyChecker:
    """A JSON decoder that also records keys given twice in one object (json keeps the last silently)."""

    def __init__(self) -> None:
        self.duplicates: list[str] = []
        self.decoder = json.JSONDecoder(object_pairs_hook=self._pairs)

    def _pairs(self, pairs: list[tuple[str, Any]]) -> dict:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen and key not in self.duplicates:
                    self.duplicates.append(key)
                seen.add(key)
        return obj

    def report(self, line: int, problems: ProblemSink) -> None:
        for key in self.duplicates:
            problems.add(line, key, "duplicate JSON key: the object gives it more than once and only the last "
                         "value would be kept; remove or rename the other one")
        self.duplicates.clear()


def parse_jsonl(data: bytes, problems: ProblemSink, blank_lines: list[int] | None = None) -> list[tuple[int, Any]]:
    records: list[tuple[int, Any]] = []
    checker = _KeyChecker()
    pieces = data.split(b"\n")
    if pieces and pieces[-1] == b"":
        pieces.pop()  # the newline that ends the last line does not start another one
    for number, raw in enumerate(pieces, start=1):
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
            if blank_lines is not None:
                blank_lines.append(number)
            continue
        try:
            records.append((number, checker.decoder.decode(text)))
        except json.JSONDecodeError as exc:
            problems.add(number, None, f"invalid JSON: {exc.msg} (column {exc.colno})")
        checker.report(number, problems)
    return records


def parse_json_array(data: bytes, problems: ProblemSink) -> list[tuple[int, Any]]:
    """Parse a `.json` file holding a list, remembering the line on which each element starts."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problems.add(line, None, f"not valid UTF-8 (byte 0x{data[exc.start]:02x})")
        return []
    checker = _KeyChecker()
    decoder = checker.decoder
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
        checker.report(line_of(pos), problems)
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


# ----------------------------------------------------------------------------------------------- CSV


def _csv_cell(column: str, value: str) -> Any:
    if column == "label" and value.strip().lower() in LABEL_SPELLINGS:
        return LABEL_SPELLINGS[value.strip().lower()]
    stripped = value.lstrip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value  # a string that merely starts with a bracket; validation judges its type
    return value


def _read_csv(path: Path, problems: ProblemSink, blank_lines: list[int] | None = None) -> list[tuple[int, Any]]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        problems.add(data[: exc.start].count(b"\n") + 1, None, f"not valid UTF-8 (byte 0x{data[exc.start]:02x})")
        return []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return []
    except csv.Error as exc:
        problems.add(1, None, f"invalid CSV header: {exc}")
        return []
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        problems.add(1, None, f"duplicate CSV column name{'s' if len(dupes) > 1 else ''} {', '.join(map(repr, dupes))}")
        return []
    records: list[tuple[int, Any]] = []
    row_number = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.add(row_number + 1, None, f"invalid CSV: {exc}")
            break
        row_number += 1
        if not any(c.strip() for c in cells):
            if blank_lines is not None:
                blank_lines.append(row_number)
            continue
        if len(cells) != len(header):
            problems.add(row_number, None, f"has {len(cells)} cells but the header has {len(header)} columns")
            continue
        records.append((row_number, {k: _csv_cell(k, v) for k, v in zip(header, cells) if v != ""}))
    return records


# --------------------------------------------------------------------------------- Parquet and datasets


def _drop_nulls(record: dict) -> dict:
    # Columnar files give every row every column; a null is the columnar spelling of "field absent".
    return {k: v for k, v in record.items() if v is not None}


def _read_parquet(path: Path, problems: ProblemSink) -> list[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        problems.add(None, None, f"not a readable Parquet file: {exc}")
        return []
    records: list[tuple[int, Any]] = []
    # Record batches keep the Arrow buffers of the whole file from being materialised at once.
    for batch in file.iter_batches(batch_size=4096):
        for record in batch.to_pylist():
            records.append((len(records) + 1, _drop_nulls(record)))
    return records


def _read_saved_dataset(path: Path, problems: ProblemSink) -> list[tuple[int, Any]]:
    if (path / "dataset_dict.json").is_file():
        try:
            splits = json.loads((path / "dataset_dict.json").read_text("utf-8")).get("splits", [])
        except (OSError, json.JSONDecodeError):
            splits = []
        problems.add(None, None, "is a DatasetDict folder with several splits; point to one split's folder, e.g. "
                     + ", ".join(str(path / s) for s in splits))
        return []
    from datasets import load_from_disk

    try:
        dataset = load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises several types for a damaged folder
        problems.add(None, None, f"not a readable saved dataset folder: {exc}")
        return []
    records: list[tuple[int, Any]] = []
    for batch in dataset.iter(batch_size=4096):
        keys = list(batch)
        for values in zip(*(batch[k] for k in keys)):
            records.append((len(records) + 1, _drop_nulls(dict(zip(keys, values)))))
    return records
