"""A run that failed before training (bad model, bad data) does not block its name: the corrected rerun replaces
it. A run that trained anything (a checkpoint, a metrics record, an export) or is still alive is never replaced."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tuneforge.atomic import write_json_atomic
from tuneforge.cli.main import app
from tuneforge.runs.rundir import RunDir, untrained_leftover

ROWS = [{"messages": [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": str(i)}]}
        for i in range(8)]


def _config(tmp_path, model: str, train: str):
    path = tmp_path / "run.yaml"
    path.write_text(
        f"model: {{source: {model}}}\n"
        f"data: {{train: {train}, max_length: 64}}\n"
        "training: {max_steps: 1, batch_size: 4}\n"
        "eval: {compare_base: false}\n"
        "export: {merged: false}\n"
        f"output: {{dir: {tmp_path / 'runs'}, name: retry}}\n"
    )
    return str(path)


def _train(config: str):
    return CliRunner().invoke(app, ["train", config])


def _status(tmp_path) -> str:
    return json.loads((tmp_path / "runs" / "retry" / "manifest.json").read_text())["status"]


@pytest.mark.timeout(300)
def test_rerun_after_a_bad_model_path_replaces_the_failed_run(tmp_path, tiny_model_dir):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    failed = _train(_config(tmp_path, str(tmp_path / "no-such-model"), str(train)))
    assert failed.exit_code != 0 and "no-such-model" in failed.output
    assert _status(tmp_path) == "failed"

    fixed = _train(_config(tmp_path, str(tiny_model_dir), str(train)))
    assert fixed.exit_code == 0, fixed.output
    assert "replacing" in fixed.output and "failed before training" in fixed.output
    assert _status(tmp_path) == "completed"
    assert (tmp_path / "runs" / "retry" / "adapter").is_dir()


@pytest.mark.timeout(300)
def test_rerun_after_bad_data_replaces_the_failed_run(tmp_path, tiny_model_dir):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in ROWS) + "{not json\n")
    config = _config(tmp_path, str(tiny_model_dir), str(train))
    failed = _train(config)
    assert failed.exit_code != 0 and f"{train}:9" in failed.output
    assert _status(tmp_path) == "failed"

    train.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    fixed = _train(config)
    assert fixed.exit_code == 0, fixed.output
    assert _status(tmp_path) == "completed"


def _leftover(tmp_path, status: str, **manifest) -> RunDir:
    run = RunDir(tmp_path / "r")
    write_json_atomic(run.manifest, {"status": status, "error": "ModelSourceError: x", **manifest})
    return run


def test_only_runs_that_never_trained_are_replaceable(tmp_path):
    run = _leftover(tmp_path, "failed")
    assert "failed before training" in untrained_leftover(run.path)
    run.metrics.write_text("")  # created, nothing logged
    assert untrained_leftover(run.path)

    (run.checkpoints / "checkpoint-2").mkdir(parents=True)
    assert untrained_leftover(run.path) is None  # resumable work
    (run.checkpoints / "checkpoint-2").rename(run.checkpoints / "untrusted-checkpoint-2")
    assert untrained_leftover(run.path) is None  # evidence kept for inspection
    (run.checkpoints / "untrusted-checkpoint-2").rmdir()
    run.metrics.write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")
    assert untrained_leftover(run.path) is None  # it trained
    run.metrics.unlink()
    run.adapter.mkdir()
    assert untrained_leftover(run.path) is None
    run.adapter.rmdir()

    for status in ("completed", "running"):
        assert untrained_leftover(_leftover(tmp_path, status).path) is None
    # `running` whose process is alive: never touched; whose process is gone: interrupted before training.
    here = socket.gethostname()
    assert untrained_leftover(_leftover(tmp_path, "running", pid=os.getpid(), host=here).path) is None
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert "interrupted before training" in untrained_leftover(
        _leftover(tmp_path, "running", pid=gone.pid, host=here).path)
    (tmp_path / "r" / "manifest.json").write_text("{torn")
    assert untrained_leftover(tmp_path / "r") is None  # unreadable: not ours to judge
