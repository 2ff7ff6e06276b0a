"""`tuneforge data validate|audit|clean|split|mix|convert` end to end, and training reads every output."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from tuneforge.cli.main import app
from tuneforge.data.formats import load_dataset_file
from tuneforge.errors import DataError

runner = CliRunner()


def chat(q, a, **extra):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], **extra}


def write(tmp_path, name, rows):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def invoke(*args):
    return runner.invoke(app, list(args), catch_exceptions=True)


def error_text(result) -> str:
    """The printed error with rich's line wrapping undone."""
    assert result.exit_code != 0
    message = result.exception.message if isinstance(result.exception, DataError) else result.output
    return " ".join(message.split())


def test_every_command_documents_an_example():
    for cmd in ("validate", "audit", "clean", "split", "mix", "convert", "preview"):
        result = invoke("data", cmd, "--help")
        assert result.exit_code == 0 and "Example: tuneforge data " + cmd in result.output.replace("\n", " "), cmd


def test_validate_fails_then_skip_invalid_writes_side_file(tmp_path):
    src = write(tmp_path, "in.jsonl",
                [chat("a", "b"), "{oops", {"messages": [{"role": "robot", "content": "x"}]}, chat("c", "d")])
    result = invoke("data", "validate", src)
    text = error_text(result)
    assert f"{src}:2: invalid JSON" in text and f"{src}:3: messages[0].role: unknown role" in text
    out = tmp_path / "ok.jsonl"
    result = invoke("data", "validate", src, "--skip-invalid", "--out", str(out))
    assert result.exit_code == 0, result.output
    side = [json.loads(x) for x in (tmp_path / "ok.jsonl.rejected.jsonl").read_text().splitlines()]
    assert [(r["line"], "raw" in r) for r in side] == [(2, True), (3, False)]
    assert load_dataset_file(str(out)).rows == [{**chat("a", "b"), "meta": {}}, {**chat("c", "d"), "meta": {}}]


def test_convert_round_trips_and_impossible_rows(tmp_path):
    alpaca = write(tmp_path, "a.jsonl", [{"instruction": "Hi", "output": "Hello", "id": 1},
                                          {"instruction": "Q", "output": "A", "system": "S", "id": 2}])
    out = tmp_path / "chat.jsonl"
    assert invoke("data", "convert", alpaca, "--to", "chat", "--out", str(out)).exit_code == 0
    assert load_dataset_file(str(out)).rows[0] == {**chat("Hi", "Hello"), "meta": {"id": 1}}
    result = invoke("data", "convert", str(out), "--to", "prompt_completion", "--out", str(tmp_path / "pc.jsonl"))
    assert f"{out}:2: cannot convert chat to prompt_completion: only single-turn chat" in error_text(result)
    result = invoke("data", "convert", str(out), "--to", "prompt_completion", "--out", str(tmp_path / "pc.jsonl"),
                    "--skip-invalid")
    assert result.exit_code == 0
    assert load_dataset_file(str(tmp_path / "pc.jsonl")).rows == [
        {"prompt": "Hi", "completion": "Hello", "meta": {"id": 1}}]
    assert json.loads((tmp_path / "pc.jsonl.rejected.jsonl").read_text())["line"] == 2
    pref = write(tmp_path, "p.jsonl", [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}])
    assert invoke("data", "convert", pref, "--to", "openai_dpo", "--out", str(tmp_path / "o.jsonl")).exit_code == 0
    openai = json.loads((tmp_path / "o.jsonl").read_text())
    assert openai == {"input": {"messages": [{"role": "user", "content": "2+2?"}]},
                      "preferred_output": [{"role": "assistant", "content": "4"}],
                      "non_preferred_output": [{"role": "assistant", "content": "5"}]}
    assert invoke("data", "convert", str(tmp_path / "o.jsonl"), "--to", "preference",
                  "--out", str(tmp_path / "back.jsonl")).exit_code == 0
    back = load_dataset_file(str(tmp_path / "back.jsonl"))
    assert back.format == "preference" and back.rows[0]["chosen"] == [{"role": "assistant", "content": "4"}]
    assert invoke("data", "convert", pref, "--to", "kto", "--out", str(tmp_path / "k.jsonl")).exit_code == 0
    assert [r["label"] for r in load_dataset_file(str(tmp_path / "k.jsonl")).rows] == [True, False]
    result = invoke("data", "convert", alpaca, "--to", "preference", "--out", str(tmp_path / "x.jsonl"))
    assert "2 of 2 rows cannot be converted to preference" in error_text(result)


def test_convert_to_text_renders_with_chat_template(tmp_path, tiny_model_dir):
    src = write(tmp_path, "c.jsonl", [chat("Hi", "Hello")])
    out = tmp_path / "t.jsonl"
    result = invoke("data", "convert", src, "--to", "text", "--out", str(out), "--model", str(tiny_model_dir))
    assert result.exit_code == 0, result.output
    assert load_dataset_file(str(out)).rows[0]["text"] == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n")


def test_split_and_mix_outputs_and_manifests(tmp_path):
    rows = [chat(f"q{i}", f"a{i}", user=f"u{i % 5}") for i in range(40)]
    src = write(tmp_path, "d.jsonl", rows)
    result = invoke("data", "split", src, "--out-dir", str(tmp_path / "s"), "--strategy", "grouped", "--field", "user",
                    "--ratios", "train=0.6,validation=0.2,test=0.2", "--seed", "3")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "s" / "split_manifest.json").read_text())
    assert sum(manifest[k]["rows"] for k in ("train", "validation", "test")) == 40 and manifest["field"] == "meta.user"
    users = {k: {r["meta"]["user"] for r in load_dataset_file(manifest[k]["path"]).rows}
             for k in ("train", "validation", "test")}
    assert not (users["train"] & users["test"]) and not (users["train"] & users["validation"])
    other = write(tmp_path, "o.jsonl", [chat(f"x{i}", "y") for i in range(10)])
    out = tmp_path / "mix.jsonl"
    result = invoke("data", "mix", "--source", f"a={src}:3", "--source", f"b={other}:1", "--total", "20",
                    "--out", str(out), "--seed", "1")
    assert result.exit_code == 0, result.output
    mixed = load_dataset_file(str(out))
    assert len(mixed) == 20 and sorted(r["meta"]["source"] for r in mixed.rows).count("a") == 15
    mf = json.loads((tmp_path / "mix.jsonl.manifest.json").read_text())
    assert [s["actual"] for s in mf["sources"]] == [15, 5] and mf["output_sha256"] == mixed.sha256
    result = invoke("data", "mix", "--source", f"a={src}@50", "--out", str(out))
    assert "a has 40 rows, 50 requested" in error_text(result)


def test_clean_and_audit_outputs_read_by_training_loader(tmp_path):
    src = write(tmp_path, "d.jsonl", [chat("Hi", "Hello"), chat("hi", "hello"), chat("mail x@y.org", "ok")])
    out = tmp_path / "c.jsonl"
    assert invoke("data", "clean", src, "--out", str(out)).exit_code == 0
    assert len(load_dataset_file(str(out))) == 2
    result = invoke("data", "audit", src, "--out", str(tmp_path / "au"))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "au" / "audit.json").read_text())
    assert report["duplicates"]["exact"] == [{"lines": [1, 2]}] and report["pii"]["counts"] == {"EMAIL": 1}
    assert (tmp_path / "au" / "audit.html").read_text().startswith("<!doctype html>")


def test_clean_help_names_the_real_redaction_tag():
    from tuneforge.data.pii import redact

    redacted, _ = redact("write to jane.doe@example.com")
    tag = redacted.removeprefix("write to ")
    result = runner.invoke(app, ["data", "clean", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0 and tag in result.output


def test_audit_summary_counts_rows_over_context_window(tmp_path, tiny_model_dir):
    # The tiny model's context window is 512 tokens; one row is far longer, two are short.
    long = " ".join(f"word{k}" for k in range(700))
    src = write(tmp_path, "d.jsonl", [chat("Hi", "Hello"), chat("Q", long), chat("Bye", "See you")])
    result = runner.invoke(app, ["data", "audit", src, "--model", str(tiny_model_dir), "--max-length", "64",
                                 "--out", str(tmp_path / "au")], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "au" / "audit.json").read_text())
    tokens = report["tokens"]
    assert tokens["context_window"] == 512 and tokens["over_context_window"] == 1
    assert "1 rows > context window 512" in " ".join(result.output.split())


def test_audit_and_split_agree_on_field_names(tmp_path):
    src = write(tmp_path, "d.jsonl", [chat(f"q{i}", f"a{i}", category="xy"[i % 2]) for i in range(10)])
    result = invoke("data", "audit", src, "--label-field", "category", "--out", str(tmp_path / "au"))
    assert result.exit_code == 0, result.output
    balance = json.loads((tmp_path / "au" / "audit.json").read_text())["label_balance"]
    assert balance["counts"] == {"x": 5, "y": 5}
    result = invoke("data", "split", src, "--out-dir", str(tmp_path / "s"), "--strategy", "stratified",
                    "--field", "category")
    assert result.exit_code == 0, result.output
    for cmd in (["audit", src, "--label-field", "nope", "--out", str(tmp_path / "au2")],
                ["split", src, "--out-dir", str(tmp_path / "s2"), "--strategy", "grouped", "--field", "nope"]):
        result = invoke("data", *cmd)
        assert result.exit_code != 0
        shown = " ".join(result.output.split()) + str(getattr(result.exception, "hint", ""))
        assert "no row has the field 'nope'" in shown and "meta.category" in shown, shown


def test_validate_prints_warnings_and_blank_lines(tmp_path):
    src = write(tmp_path, "d.jsonl", [chat("a", "b", sorce="web"), "", chat("c", "d")])
    result = invoke("data", "validate", src)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert f"{src}: 2 valid chat rows" in out
    assert f"warning: {src}:1: sorce: not a field of the row format, kept under meta" in out
    assert "1 blank line skipped (line 2)" in out
