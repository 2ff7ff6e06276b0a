"""The LLM judge: checked before generation, results kept when it fails later, a local model as the judge, and
the task's system prompt in what the judge reads (issue 13, item 19)."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from tests.unit.test_evalcmd_endpoint import Stub
from tuneforge.cli.main import app
from tuneforge.errors import TuneforgeError
from tuneforge.eval.standalone import EvalOptions, evaluate_command

SYSTEM = "You are a terse bot. Always answer with the single word SYSTEMRULE first."


def _quiet() -> Console:
    return Console(file=open("/dev/null", "w"))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens here once the socket is closed


@pytest.fixture()
def chat_data(tmp_path: Path) -> Path:
    rows = [{"id": f"q{i}", "messages": [{"role": "system", "content": SYSTEM},
                                         {"role": "user", "content": f"Say item {i}"},
                                         {"role": "assistant", "content": f"item {i}"}]} for i in range(3)]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _echo(model: str, prompt: str) -> str:
    return "item 1" if "item 1" in prompt else "no"


def test_unreachable_judge_fails_before_any_generation(tmp_path, chat_data):
    port = _closed_port()
    with Stub(_echo) as model_server:
        opts = EvalOptions(model=None, data=str(chat_data), endpoint=model_server.url, endpoint_model="m",
                           out=tmp_path / "out", judge_endpoint=f"http://127.0.0.1:{port}", retries=0)
        with pytest.raises(TuneforgeError) as info:
            evaluate_command(opts, _quiet())
        assert model_server.requests == []  # not one answer generated
    assert "checked before generating" in info.value.message and "Connection refused" in info.value.message
    assert not (tmp_path / "out").exists()


def test_judge_failing_after_generation_keeps_the_results(tmp_path, chat_data):
    def judge(model: str, prompt: str) -> str:
        return "OK"

    with Stub(_echo) as model_server, Stub(judge) as judge_server:
        opts = EvalOptions(model=None, data=str(chat_data), endpoint=model_server.url, endpoint_model="m",
                           out=tmp_path / "out", judge_endpoint=judge_server.url, retries=0)
        judge_server.status = 200
        original = judge_server.reply

        def fail_after_check(model, prompt):  # the check passes, every rating request then breaks the handler
            if "[Answer]" in prompt:
                judge_server.status = 400
            return original(model, prompt)

        judge_server.reply = fail_after_check
        with pytest.raises(TuneforgeError, match="the judge failed after generation") as info:
            evaluate_command(opts, _quiet())
    assert "results.json" in info.value.hint
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["judge"]["status"] == "failed" and "HTTP 400" in results["judge"]["error"]
    assert results["models"]["tuned"]["summary"]["exact_match_norm"] == pytest.approx(1 / 3)
    assert "judge_score" not in results["models"]["tuned"]["summary"]
    assert [row["tuned"]["prediction"] for row in results["items"]] == ["no", "item 1", "no"]


def test_judge_prompt_carries_the_system_prompt(tmp_path, chat_data):
    prompts: list[str] = []

    def judge(model: str, prompt: str) -> str:
        prompts.append(prompt)
        return "Score: 7\nReason: fine"

    with Stub(_echo) as model_server, Stub(judge) as judge_server:
        opts = EvalOptions(model=None, data=str(chat_data), endpoint=model_server.url, endpoint_model="m",
                           out=tmp_path / "out", judge_endpoint=judge_server.url)
        results = evaluate_command(opts, _quiet())
    rated = [p for p in prompts if "[Answer]" in p]
    assert len(rated) == 3 and all(SYSTEM in p for p in rated)
    assert all(p.index(SYSTEM) < p.index("[Question]\nSay item") for p in rated)
    assert results["judge"]["status"] == "ok"
    assert results["models"]["tuned"]["summary"]["judge_score"] == pytest.approx(0.7)


def test_local_model_folder_as_the_judge(tmp_path, chat_data, tiny_model_dir):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", str(tiny_model_dir), "--data", str(chat_data), "--max-new-tokens", "3",
                                      "--judge-model", str(tiny_model_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    judge = json.loads((out / "results.json").read_text())["judge"]
    assert judge["status"] == "ok" and judge["judges"] == [str(tiny_model_dir)] and judge["n_items"] == 3
    rows = json.loads((out / "results.json").read_text())["items"]
    assert all(isinstance(r["tuned"]["judge"]["reply"], str) for r in rows)  # the local model replied to each
    # a random tiny model rarely writes a parseable score: unparsed replies are counted, never guessed
    assert judge["unparsed"]["tuned"] + sum(r["tuned"]["judge"]["score"] is not None for r in rows) == 3


def test_judge_references_are_checked(tmp_path, chat_data):
    missing = CliRunner().invoke(app, ["eval", "x", "--data", str(chat_data), "--judge-model",
                                       str(tmp_path / "no-such-model")])
    assert missing.exit_code != 0 and "Traceback" not in missing.output
    bad_url = CliRunner().invoke(app, ["eval", "x", "--data", str(chat_data), "--judge-endpoint", "./folder"])
    assert bad_url.exit_code == 2 and "not an http(s) URL" in bad_url.output
    assert "--judge-model PATH without --judge-endpoint" in bad_url.output


def test_batch_tokens_reaches_the_engine(tmp_path, chat_data, tiny_model_dir, monkeypatch):
    """`tuneforge eval --batch-tokens N` sizes the local engine's generation batches (models.inference)."""
    from tuneforge.models import inference

    seen = []
    original = inference.budget_batches

    def spy(order, lengths, limits, batch_size, batch_tokens=None):
        seen.append(batch_tokens)
        return original(order, lengths, limits, batch_size, batch_tokens)

    monkeypatch.setattr(inference, "budget_batches", spy)
    result = CliRunner().invoke(app, ["eval", str(tiny_model_dir), "--data", str(chat_data), "--max-new-tokens", "3",
                                      "--batch-tokens", "64", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert seen and set(seen) == {64}
