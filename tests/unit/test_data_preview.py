"""`tuneforge data preview`: renders one row with trained tokens highlighted, fails like training would."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tuneforge.cli import data as data_cli
from tuneforge.data.formats import load_dataset_file
from tuneforge.data.preview import build_preview, token_pieces
from tuneforge.errors import DataError

ROW = {"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi there!"}]}


@pytest.fixture()
def data_file(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROW) + "\n" + json.dumps({**ROW, "id": 2}) + "\n")
    return str(path)


def test_build_preview_marks_answer_tokens(tokenizer, data_file):
    preview = build_preview(load_dataset_file(data_file), tokenizer, index=1)
    assert preview.line == 2 and preview.template.derived and preview.template.verified_rows == 2
    trained = "".join(text for text, is_trained in preview.pieces if is_trained)
    assert trained == "Hi there!<|im_end|>"
    assert "".join(text for text, _ in preview.pieces) == tokenizer.decode(preview.input_ids)
    with pytest.raises(DataError, match="--index 5 is out of range: .* has 2 rows"):
        build_preview(load_dataset_file(data_file), tokenizer, index=5)


def test_token_pieces_keep_multibyte_characters_whole(tokenizer):
    ids = tokenizer("\U0001f600 ok", add_special_tokens=False)["input_ids"]
    pieces = token_pieces(tokenizer, ids, [1] * len(ids))
    assert "".join(p for p, _ in pieces) == "\U0001f600 ok" and all("\ufffd" not in p for p, _ in pieces)


def _app():
    from tuneforge.cli.main import app

    return app


def test_cli_preview_prints_highlighted_example(tokenizer, data_file, monkeypatch):
    seen = {}

    def fake_load(model, chat_template_path):
        seen.update(model=model, chat_template_path=chat_template_path)
        return tokenizer

    monkeypatch.setattr(data_cli, "_load_tokenizer", fake_load)
    runner = CliRunner()
    result = runner.invoke(_app(), ["data", "preview", data_file, "--model", "some/model"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert seen == {"model": "some/model", "chat_template_path": None}
    out = result.output
    assert "Hi there!" in out and "legend:" in out and "trained (carries loss)" in out
    assert "index 0 (line 1)" in out and "proven byte-identical" in out and "warning" not in out

    cut = runner.invoke(_app(), ["data", "preview", data_file, "--model", "m", "--max-length", "30"],
                        env={"COLUMNS": "200"})
    assert cut.exit_code == 0, cut.output
    # SmolLM2's default system prompt alone is longer than 30 tokens, so the answer is cut off entirely.
    assert "truncated to max_length 30" in cut.output and "no trained tokens" in cut.output


def test_cli_preview_reports_data_errors(tmp_path, monkeypatch):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": "nope"}\n')
    monkeypatch.setattr(data_cli, "_load_tokenizer", lambda *a: pytest.fail("tokenizer loaded for invalid data"))
    result = CliRunner().invoke(_app(), ["data", "preview", str(bad)])
    # The CLI turns a DataError into a message naming file, line and field, and a non-zero exit.
    assert result.exit_code == DataError.exit_code
    assert f"{bad}:1: messages: must be a list of messages, got string" in result.output
