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


def _trained(part_pieces) -> str:
    return "".join(text for text, trained in part_pieces if trained)


def test_preview_renders_preference_kto_and_text_rows(tokenizer, tmp_path):
    pref = tmp_path / "p.jsonl"
    pref.write_text(json.dumps({"prompt": "Question: what is two plus two?\n", "chosen": "Four.",
                                "rejected": "Five."}) + "\n")
    shown = build_preview(load_dataset_file(str(pref)), tokenizer)
    assert [p.title for p in shown.parts] == ["chosen", "rejected"]
    eos = tokenizer.eos_token
    assert [_trained(p.pieces) for p in shown.parts] == ["Four." + eos, "Five." + eos]
    assert all("Question" in "".join(t for t, _ in p.pieces) for p in shown.parts)

    kto = tmp_path / "k.jsonl"
    kto.write_text(json.dumps({"prompt": [{"role": "user", "content": "Say hi"}],
                               "completion": [{"role": "assistant", "content": "Hi there!"}], "label": "false"}) + "\n")
    shown = build_preview(load_dataset_file(str(kto)), tokenizer)
    assert shown.facts == [("label", "false (undesirable)")]
    assert _trained(shown.pieces).strip() == "Hi there!<|im_end|>"

    text = tmp_path / "t.jsonl"
    text.write_text(json.dumps({"text": "Some raw text for pretraining."}) + "\n")
    shown = build_preview(load_dataset_file(str(text)), tokenizer, max_length=4)
    assert _trained(shown.pieces) == "Some raw text for pretraining." + eos  # every token, document + EOS
    assert not shown.truncated and "continues into the next block" in shown.notes[0]


def test_cli_preview_marks_trained_spans_when_piped(tokenizer, data_file, monkeypatch, tmp_path):
    monkeypatch.setattr(data_cli, "_load_tokenizer", lambda *a: tokenizer)
    result = CliRunner().invoke(_app(), ["data", "preview", data_file], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "[[Hi there!<|im_end|>]]" in result.output and result.output.count("[[") == 2  # answer + legend
    for rows in ([{"prompt": "2+2?", "chosen": "4", "rejected": "5"}], [{"text": "plain words"}]):
        path = tmp_path / "x.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        result = CliRunner().invoke(_app(), ["data", "preview", str(path)], env={"COLUMNS": "200"})
        assert result.exit_code == 0 and result.exception is None, result.output
        assert "[[" in result.output


def test_legend_shows_context_in_the_context_style(tokenizer, data_file):
    from rich.text import Text

    from tuneforge.data.preview import CONTEXT_STYLES, TRAINED_STYLES, preview_renderable

    data = load_dataset_file(data_file)
    group = preview_renderable(data, build_preview(data, tokenizer), "assistant", 512)
    legend = next(r for r in group.renderables if isinstance(r, Text) and r.plain.startswith("legend:"))
    styles = {str(span.style) for span in legend.spans if "context" in legend.plain[span.start:span.end]
              or "no loss" in legend.plain[span.start:span.end]}
    assert styles and styles <= set(CONTEXT_STYLES) and not styles & set(TRAINED_STYLES)
