"""New formats (preference, kto, text), file types (CSV, Parquet, datasets folder, JSON), skip-invalid."""
from __future__ import annotations

import json

import pytest

from tuneforge.data.formats import load_dataset_file
from tuneforge.errors import DataError

USER = {"role": "user", "content": "Which is better?"}


def jsonl(tmp_path, rows, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return str(path)


def problems(path, fmt="auto"):
    with pytest.raises(DataError) as info:
        load_dataset_file(path, fmt)
    return info.value.message


def test_preference_plain_and_conversational_and_openai_shape(tmp_path):
    plain = load_dataset_file(jsonl(tmp_path, [{"prompt": "2+2?", "chosen": "4", "rejected": "5", "id": "a"}]))
    assert plain.format == "preference"
    assert plain.rows == [{"prompt": "2+2?", "chosen": "4", "rejected": "5", "meta": {"id": "a"}}]
    conv = load_dataset_file(jsonl(tmp_path, [
        {"prompt": [USER], "chosen": "A", "rejected": [{"role": "assistant", "content": "B"}]}]))
    assert conv.rows[0]["chosen"] == [{"role": "assistant", "content": "A"}]
    assert conv.rows[0]["rejected"] == [{"role": "assistant", "content": "B"}]
    openai = load_dataset_file(jsonl(tmp_path, [{"input": {"messages": [USER], "tools": []},
                                                 "preferred_output": [{"role": "assistant", "content": "A"}],
                                                 "non_preferred_output": [{"role": "assistant", "content": "B"}]}]))
    assert openai.format == "preference"
    assert openai.rows[0] == {"prompt": [USER], "chosen": [{"role": "assistant", "content": "A"}],
                              "rejected": [{"role": "assistant", "content": "B"}], "meta": {"input": {"tools": []}}}


def test_preference_kto_text_errors_with_lines(tmp_path):
    path = jsonl(tmp_path, [
        {"prompt": "p", "chosen": "same", "rejected": "same"},
        {"prompt": "p", "chosen": [{"role": "assistant", "content": "x"}], "rejected": "y"},
        {"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
         "chosen": "x", "rejected": "y"},
        {"input": {"messages": [USER]}, "preferred_output": [{"role": "user", "content": "x"}],
         "non_preferred_output": [{"role": "assistant", "content": "z"}]},
    ])
    text = problems(path)
    assert f"{path}:1: rejected: is identical to the chosen response" in text
    assert f"{path}:2: chosen: is a message list but the prompt is a plain string" in text
    assert f"{path}:3: prompt: a prompt must end with a user message" in text
    assert f"{path}:4: preferred_output[0].role: must be 'assistant' in a response, got 'user'" in text
    kto = jsonl(tmp_path, [{"prompt": "p", "completion": "c", "label": True},
                           {"prompt": "p", "completion": "", "label": False}], "k.jsonl")
    assert f"{kto}:2: completion: is empty" in problems(kto)
    forced = jsonl(tmp_path, [{"prompt": "p", "completion": "c", "label": "positive"}], "k2.jsonl")
    assert f"{forced}:1: label: must be true or false" in problems(forced, "kto")
    assert load_dataset_file(forced).format == "prompt_completion"  # a non-boolean label is metadata
    texts = jsonl(tmp_path, [{"text": "hello"}, {"text": 3}], "t.jsonl")
    assert f"{texts}:2: text: must be a string, got number" in problems(texts)


def test_kto_and_text_normalised(tmp_path):
    data = load_dataset_file(jsonl(tmp_path, [{"prompt": [USER], "completion": "ok", "label": False}]))
    assert data.format == "kto"
    assert data.rows == [{"prompt": [USER], "completion": [{"role": "assistant", "content": "ok"}], "label": False,
                          "meta": {}}]
    text = load_dataset_file(jsonl(tmp_path, [{"text": "raw", "source": "web"}], "t.jsonl"))
    assert text.rows == [{"text": "raw", "meta": {"source": "web"}}]


def test_duplicate_ids_and_meta_round_trip(tmp_path):
    path = jsonl(tmp_path, [{"text": "a", "id": 7}, {"text": "b", "id": 8}, {"text": "c", "id": 7}])
    assert f"{path}:3: id: duplicate id 7 (first used on line 1)" in problems(path)
    again = jsonl(tmp_path, [{"text": "a", "meta": {"id": 1, "src": "x"}}], "m.jsonl")
    assert load_dataset_file(again).rows == [{"text": "a", "meta": {"id": 1, "src": "x"}}]


def test_csv_rows_counted_with_header_as_row_1(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('prompt,completion,label,id\nhi,there,true,1\n"a, b",,false,2\nq,"[1]",0,3\n', encoding="utf-8")
    text = problems(str(path))
    # An empty cell is an absent field: data row 2 is CSV row 3; the file's other rows say it is KTO.
    assert f"{path}:3: completion: missing" in text
    assert f"{path}:4: completion: is a message list but the prompt is a plain string" in text
    path.write_text('prompt,completion,label\nhi,there,true\nyo,"no",FALSE\n', encoding="utf-8")
    data = load_dataset_file(str(path))
    assert data.format == "kto" and data.file_type == "csv" and data.line_numbers == [2, 3]
    assert [r["label"] for r in data.rows] == [True, False]
    chat = tmp_path / "c.csv"
    chat.write_text('messages\n"[{""role"": ""user"", ""content"": ""x""}, '
                    '{""role"": ""assistant"", ""content"": ""y""}]"\n')
    assert load_dataset_file(str(chat)).rows[0]["messages"][1] == {"role": "assistant", "content": "y"}


def test_parquet_and_saved_dataset_folder(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["one", None, "three"]}), tmp_path / "d.parquet")
    text = problems(str(tmp_path / "d.parquet"))
    assert f"{tmp_path / 'd.parquet'}:2: cannot tell the row format" in text  # a null is an absent field
    pq.write_table(pa.table({"prompt": ["a", "b"], "chosen": ["x", "y"], "rejected": ["z", "w"]}),
                   tmp_path / "p.parquet")
    pref = load_dataset_file(str(tmp_path / "p.parquet"))
    assert pref.format == "preference" and pref.line_numbers == [1, 2] and pref.file_type == "parquet"
    folder = tmp_path / "saved"
    datasets.Dataset.from_dict({"prompt": ["a", "b"], "completion": ["c", "d"]}).save_to_disk(str(folder))
    data = load_dataset_file(str(folder))
    assert data.file_type == "hf_dataset" and data.format == "prompt_completion" and len(data) == 2
    assert len(data.sha256) == 64
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a"]})}).save_to_disk(str(tmp_path / "dd"))
    assert "is a DatasetDict folder" in problems(str(tmp_path / "dd"))


def test_json_file_preference(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a"}],
                               indent=1))
    assert f"{path}:7: rejected: missing" in problems(str(path))


def test_skip_invalid_collects_rejected_rows(tmp_path):
    path = tmp_path / "d.jsonl"
    good = {"text": "fine"}
    path.write_bytes(b"\n".join([json.dumps(good).encode(), b"{bad", b'{"text": "caf\xe9"}',
                                 json.dumps({"text": ""}).encode(),
                                 json.dumps({"prompt": "p", "completion": "c"}).encode(),
                                 json.dumps(good).encode()]) + b"\n")
    data = load_dataset_file(str(path), skip_invalid=True)
    assert data.line_numbers == [1, 6]
    assert [r["line"] for r in data.rejected] == [2, 3, 4, 5]
    assert data.rejected[0]["raw"] == "{bad" and data.rejected[0]["reasons"][0].startswith("invalid JSON")
    assert data.rejected[1]["reasons"] == ["not valid UTF-8 (byte 0xe9 at column 14)"]
    assert data.rejected[2] == {"line": 4, "reasons": ["text: is empty"], "row": {"text": ""}}
    assert data.rejected[3]["reasons"] == ["row format prompt_completion differs from the file's majority format text"]


@pytest.mark.parametrize("prefix, good", [("quickstart:", "test.jsonl"), ("samples:", "preference-test.jsonl")])
def test_bundled_prefixes_resolve_and_name_what_exists(prefix, good):
    from tuneforge.data.formats import load_dataset_file, resolve_data_path

    assert resolve_data_path(prefix + good).is_file()
    assert len(load_dataset_file(prefix + good)) > 0
    with pytest.raises(DataError) as info:
        resolve_data_path(prefix + "nope.jsonl")
    assert f"bundled dataset '{prefix}nope.jsonl' does not exist" in info.value.message
    assert prefix + good in info.value.hint
    with pytest.raises(DataError):
        resolve_data_path(prefix + "../quickstart/train.jsonl")


@pytest.mark.parametrize("spelling,value", [(True, True), (False, False), ("true", True), ("False", False),
                                            (1, True), (0, False), ("1", True), ("0", False), ("yes", True),
                                            ("NO", False)])
def test_kto_label_spellings_read_the_same_in_jsonl_and_csv(tmp_path, spelling, value):
    other = {"prompt": "q", "completion": "d", "label": not value}
    path = jsonl(tmp_path, [{"prompt": "p", "completion": "c", "label": spelling}, other])
    data = load_dataset_file(path)
    assert data.format == "kto" and data.rows[0]["label"] is value and "label" not in data.rows[0]["meta"]
    csv_path = tmp_path / "k.csv"
    cell = json.dumps(spelling) if isinstance(spelling, bool) else str(spelling)
    csv_path.write_text(f"prompt,completion,label\np,c,{cell}\nq,d,{str(not value).lower()}\n")
    assert load_dataset_file(str(csv_path)).rows == [{k: v for k, v in r.items()} for r in data.rows]


def test_kto_file_with_an_unreadable_label_names_line_and_value(tmp_path):
    path = jsonl(tmp_path, [{"prompt": "p", "completion": "c", "label": "true"},
                            {"prompt": "q", "completion": "d", "label": "maybe"},
                            {"prompt": "r", "completion": "e", "label": 2}])
    text = problems(path)
    assert f'{path}:2: label: must be true or false' in text and 'got "maybe"' in text
    assert f"{path}:3: label: must be true or false" in text and "got 2" in text
    assert "mixed row formats" not in text
