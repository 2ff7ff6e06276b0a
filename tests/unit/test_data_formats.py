"""Loading, detection and validation of dataset files: every error names file, line and field."""
from __future__ import annotations

import hashlib
import json

import pytest

from tuneforge.data.formats import load_dataset_file, resolve_data_path
from tuneforge.errors import DataError

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def write_jsonl(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    path.write_text(text, encoding="utf-8")
    return str(path)


def problems_of(path, fmt="auto") -> str:
    with pytest.raises(DataError) as info:
        load_dataset_file(path, fmt)
    return info.value.message


def test_chat_rows_normalised_with_meta_lines_and_sha(tmp_path):
    path = write_jsonl(tmp_path, ["", {"id": "a", "task": "t", **CHAT}, "   ", {"id": "b", **CHAT}])
    data = load_dataset_file(path)
    assert data.format == "chat"
    assert data.line_numbers == [2, 4]
    assert data.rows[0] == {**CHAT, "meta": {"id": "a", "task": "t"}}
    assert data.rows[1]["meta"] == {"id": "b"}
    assert data.sha256 == hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert data.where(1) == f"{path}:4"


def test_alpaca_normalisation(tmp_path):
    path = write_jsonl(tmp_path, [
        {"instruction": "Do X", "input": "with Y", "output": "done", "id": 1},
        {"instruction": "Do Z", "input": "", "output": "ok"},
        {"instruction": "Do W", "output": "fine", "system": "Be brief."},
    ])
    data = load_dataset_file(path)
    assert data.format == "alpaca"
    assert data.rows[0] == {"messages": [{"role": "user", "content": "Do X\n\nwith Y"},
                                         {"role": "assistant", "content": "done"}], "meta": {"id": 1}}
    assert data.rows[1]["messages"][0] == {"role": "user", "content": "Do Z"}
    assert data.rows[2]["messages"][0] == {"role": "system", "content": "Be brief."}


def test_prompt_completion(tmp_path):
    path = write_jsonl(tmp_path, [{"prompt": "2+2=", "completion": "4", "src": "math"}])
    data = load_dataset_file(path)
    assert data.format == "prompt_completion"
    assert data.rows == [{"prompt": "2+2=", "completion": "4", "meta": {"src": "math"}}]


def test_json_array_with_line_numbers(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('[\n  {"prompt": "a", "completion": "b"},\n\n  {"prompt": "c", "completion": "d"}\n]\n')
    data = load_dataset_file(str(path))
    assert data.line_numbers == [2, 4]
    bad = tmp_path / "bad.json"
    bad.write_text('[\n  {"prompt": "a", "completion": "b"},\n  {"prompt": 3, "completion": "d"}\n]\n')
    assert f"{bad}:3: prompt: must be a string, got number" in problems_of(str(bad))


def test_every_error_class_reported_at_once_with_lines(tmp_path):
    lines = [
        CHAT,                                                                      # 1 ok
        '{"messages": [',                                                          # 2 bad JSON
        "[1, 2]",                                                                  # 3 not an object
        {"messages": []},                                                          # 4 empty
        {"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]},   # 5 missing content
        {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]},  # 6 type
        {"messages": [{"role": "robot", "content": "a"}, {"role": "assistant", "content": "x"}]},  # 7 role
        {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "x"}]},  # 8 order
        {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "x"}]},  # 9 late system
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "x"}]},  # 10 no assistant
        {"messages": [{"role": "user", "content": "a"},
                      {"role": "assistant", "content": "b", "weight": 0.5}]},     # 11 weight
        {"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "b"}]},  # 12 empty
        {"messages": [{"role": "user", "content": "a", "name": "bob"},
                      {"role": "assistant", "content": "b"}]},                    # 13 unknown key
        {"foo": 1},                                                                # 14 unknown format
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                      {"role": "user", "content": "c"}]},                          # 15 trailing user
        {"messages": [{"role": "user", "content": "a", "weight": 1},
                      {"role": "assistant", "content": "b", "weight": True}]},    # 16 weight on user, bool
    ]
    path = write_jsonl(tmp_path, lines)
    text = problems_of(path)
    expected = [
        f"{path}:2: invalid JSON",
        f"{path}:3: each row must be a JSON object, got list",
        f"{path}:4: messages: is empty",
        f"{path}:5: messages[0].content: missing",
        f"{path}:6: messages[0].content: must be a string, got number",
        f'{path}:7: messages[0].role: unknown role "robot"',
        f"{path}:8: messages[0].role: roles out of order: expected 'user' here, got 'assistant'",
        f"{path}:9: messages[1].role: a system message is only allowed as the first message",
        f"{path}:10: messages: has no assistant message",
        f"{path}:11: messages[1].weight: must be 0 or 1, got 0.5",
        f"{path}:12: messages[0].content: is empty",
        f"{path}:13: messages[0]: unknown key 'name'",
        f"{path}:14: cannot tell the row format",
        f"{path}:15: messages[2]: the conversation must end with an assistant message",
        f"{path}:16: messages[0].weight: only assistant messages can carry a weight",
        f"{path}:16: messages[1].weight: must be 0 or 1, got true",
    ]
    for fragment in expected:
        assert fragment in text, fragment
    assert text.startswith(f"16 problems in {path}:")


def test_non_utf8_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(json.dumps(CHAT).encode() + b"\n" + b'{"prompt": "caf\xe9"}\n')
    assert f"{path}:2: not valid UTF-8 (byte 0xe9 at column 16)" in problems_of(str(path))


def test_bom_and_crlf_accepted(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(CHAT).encode() + b"\r\n" + json.dumps(CHAT).encode() + b"\r\n")
    assert len(load_dataset_file(str(path)).rows) == 2


def test_mixed_formats_listed_by_lines(tmp_path):
    pc = {"prompt": "p", "completion": "c"}
    path = write_jsonl(tmp_path, [CHAT, CHAT, CHAT, pc, CHAT, pc])
    text = problems_of(path)
    assert ("mixed row formats in one file: chat on lines 1-3, 5 (4 rows); "
            "prompt_completion on lines 4, 6 (2 rows)") in text


def test_explicit_format_reports_missing_fields(tmp_path):
    path = write_jsonl(tmp_path, [{"prompt": "p", "completion": "c"}])
    text = problems_of(path, "alpaca")
    assert f"{path}:1: instruction: missing" in text and f"{path}:1: output: missing" in text
    with pytest.raises(DataError, match="unknown data format 'csv'"):
        load_dataset_file(path, "csv")


def test_error_display_is_capped(tmp_path):
    path = write_jsonl(tmp_path, ["not json"] * 60)
    text = problems_of(path)
    assert text.startswith("60 problems")
    assert f"{path}:50: invalid JSON" in text and f"{path}:51:" not in text
    assert "... and 10 more problems not shown" in text


def test_empty_file_and_missing_paths(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert "contains no rows" in problems_of(str(empty))
    with pytest.raises(DataError, match="data file not found: .*nope.jsonl"):
        load_dataset_file(str(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match="not a file"):
        resolve_data_path(str(tmp_path))


def test_quickstart_paths():
    path = resolve_data_path("quickstart:train.jsonl")
    assert path.is_file() and path.name == "train.jsonl"
    with pytest.raises(DataError) as info:
        resolve_data_path("quickstart:../README.md")
    assert "quickstart:test.jsonl" in info.value.hint


def test_keys_kept_under_meta_are_warned_with_lines_and_typo_guess(tmp_path):
    path = write_jsonl(tmp_path, [{"text": "a", "mesages": []}, {"text": "b", "id": 1}, {"text": "c", "sorce": "web"},
                                  {"text": "d", "sorce": "web", "meta": {"x": 1}}])
    data = load_dataset_file(path)
    assert data.format == "text" and data.rows[0]["meta"] == {"mesages": []}  # kept, nothing lost
    assert len(data.warnings) == 2  # one per key; `id` and `meta` are expected metadata, not warned about
    assert data.warnings[0].startswith(f"{path}:1: mesages: not a field of the row format, kept under meta")
    assert "did you mean 'messages'?" in data.warnings[0]
    assert data.warnings[1].startswith(f"{path}:3: sorce: ") and "lines 3-4" in data.warnings[1]
    assert "did you mean" not in data.warnings[1]


def test_row_with_only_a_misspelt_key_names_the_guess(tmp_path):
    path = write_jsonl(tmp_path, [{"mesages": [{"role": "user", "content": "x"}]}])
    assert f"{path}:1: cannot tell the row format" in (text := problems_of(path)) and "'mesages' -> 'messages'" in text


def test_blank_lines_are_counted_with_their_numbers(tmp_path):
    path = write_jsonl(tmp_path, [CHAT, "", CHAT, "   ", CHAT])
    data = load_dataset_file(path)
    assert len(data) == 3 and data.blank_lines == [2, 4]
    assert load_dataset_file(write_jsonl(tmp_path, [CHAT, CHAT], "tight.jsonl")).blank_lines == []
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("text\na\n\nb\n")
    assert load_dataset_file(str(csv_path)).blank_lines == [3]


def test_duplicate_json_keys_are_errors_naming_line_and_key(tmp_path):
    path = write_jsonl(tmp_path, [CHAT, '{"text": "a", "text": "b"}',
                                  '{"messages": [{"role": "user", "content": "x", "content": "y"}, '
                                  '{"role": "assistant", "content": "z"}]}'])
    text = problems_of(path, "auto")
    assert f"{path}:2: text: duplicate JSON key" in text and f"{path}:3: content: duplicate JSON key" in text
    array = tmp_path / "d.json"
    array.write_text('[\n {"text": "a"},\n {"text": "a",\n  "text": "b"}\n]\n')
    assert f"{array}:3: text: duplicate JSON key" in problems_of(str(array))
