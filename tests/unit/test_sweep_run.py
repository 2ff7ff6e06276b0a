"""`tuneforge sweep` end to end on a tiny random model: grid, leaderboard, best.yaml, resume after SIGKILL,
pruning and the time budget. Trials are 2 training steps on a few rows."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from tuneforge.cli.main import app

QUICKSTART = Path(__file__).resolve().parents[2] / "src/tuneforge/assets/quickstart"


def _head(src: Path, dst: Path, n: int) -> Path:
    dst.write_text("".join(src.read_text().splitlines(keepends=True)[:n]))
    return dst


@pytest.fixture()
def sweep_config(tmp_path, tiny_model_dir):
    train = _head(QUICKSTART / "train.jsonl", tmp_path / "train.jsonl", 16)
    validation = _head(QUICKSTART / "validation.jsonl", tmp_path / "validation.jsonl", 4)
    test = _head(QUICKSTART / "test.jsonl", tmp_path / "test.jsonl", 3)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"model: {{source: {tiny_model_dir}}}\n"
        f"data: {{train: {train}, validation: {validation}, test: {test}, max_length: 96}}\n"
        "training: {max_steps: 2, batch_size: 4, eval_every_steps: 1, save_every_steps: 2, learning_rate: 1.0e-3}\n"
        "eval: {max_new_tokens: 4, batch_size: 3, bootstrap_samples: 100, compare_base: false}\n"
        "export: {merged: false}\n"
        f"output: {{dir: {tmp_path / 'runs'}}}\n"
    )
    return config


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _study(tmp_path, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'runs/sweeps' / name / 'study.db'}")


def test_grid_runs_every_point_and_writes_leaderboard_and_a_trainable_best_config(sweep_config, tmp_path):
    args = ["sweep", sweep_config, "--param", "training.learning_rate=1e-3,5e-3", "--param", "method.lora.r=4,8",
            "--metric", "json_fields", "--pruner", "none"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    out = tmp_path / "runs/sweeps/tiny"
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["counts"] == {"complete": 4} and board["direction"] == "maximize"
    points = {(t["params"]["training.learning_rate"], t["params"]["method.lora.r"]) for t in board["trials"]}
    assert points == {(1e-3, 4), (1e-3, 8), (5e-3, 4), (5e-3, 8)}
    values = [t["value"] for t in board["trials"]]
    assert board["best"]["value"] == max(values) and values == sorted(values, reverse=True)

    for trial in board["trials"]:  # each trial is a normal run with its lineage and its own config
        run = Path(trial["run"])
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["status"] == "completed" and manifest["sweep"]["trial"] == trial["trial"]
        assert manifest["sweep"]["params"] == trial["params"] and manifest["datasets"]["train"]["rows"] == 16
        results = json.loads((run / "eval/results.json").read_text())
        assert results["models"]["tuned"]["summary"]["json_fields"] == trial["value"]
        assert trial["validation_loss"] == results["models"]["tuned"]["summary"]["validation_loss"]
        assert f"r: {trial['params']['method.lora.r']}" in (run / "config.yaml").read_text()

    html = (out / "leaderboard.html").read_text()
    assert html.count("<svg") == 2 and "json_fields vs training.learning_rate" in html
    assert "json_fields vs method.lora.r" in html and html.count("<circle") == 8
    best = out / "best.yaml"
    text = best.read_text()
    assert f"r: {board['best']['params']['method.lora.r']}" in text and "name: tiny-best" in text
    check = invoke("config", "validate", best)
    assert check.exit_code == 0, check.output

    again = invoke(*args)  # the same study: nothing left to run
    assert again.exit_code == 0 and "4 trials finished, 0 to run" in again.output
    assert len(_study(tmp_path, "tiny").trials) == 4
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "sweeps", "tiny-t000", "tiny-t001", "tiny-t002", "tiny-t003"]


def test_resume_after_sigkill_keeps_finished_trials_and_requeues_the_killed_one(sweep_config, tmp_path):
    args = ["sweep", str(sweep_config), "--param", "training.learning_rate=1e-3,5e-3", "--metric", "json_fields",
            "--pruner", "none"]
    proc = subprocess.Popen([sys.executable, "-m", "tuneforge.cli.main", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    second = tmp_path / "runs/tiny-t001/manifest.json"
    deadline = time.monotonic() + 300
    try:
        while not second.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert second.is_file(), "the second trial never started"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    study = _study(tmp_path, "tiny")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING"]
    killed_params = study.trials[1].params
    first_started = json.loads((tmp_path / "runs/tiny-t000/manifest.json").read_text())["started_at"]

    result = invoke(*args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "trial 1 was killed while running; queued again" in " ".join(result.output.split())
    study = _study(tmp_path, "tiny")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert study.trials[2].params == killed_params  # the killed grid point, not a new one
    assert json.loads((tmp_path / "runs/tiny-t000/manifest.json").read_text())["started_at"] == first_started
    killed = json.loads(second.read_text())
    assert killed["status"] == "failed" and "killed during this trial" in killed["error"]
    board = json.loads((tmp_path / "runs/sweeps/tiny/leaderboard.json").read_text())
    assert board["counts"] == {"complete": 2, "fail": 1}


def test_pruned_trial_stops_early_and_budget_stops_starting_trials(sweep_config, tmp_path):
    # Every tiny-model validation loss is far above 1.0, so the threshold pruner stops the trial at its first
    # evaluation (step 1 of 2); the 1 s budget is spent by then, so the second grid point never starts.
    result = invoke("sweep", sweep_config, "--param", "training.learning_rate=1e-3,5e-3", "--metric",
                    "json_fields", "--pruner", "threshold", "--prune-above", "1.0", "--budget", "1s")
    assert result.exit_code == 1  # no trial finished with a value, so there is no best config
    assert "no new trials started" in result.output
    board = json.loads((tmp_path / "runs/sweeps/tiny/leaderboard.json").read_text())
    assert board["counts"] == {"pruned": 1} and board["stopped_by_budget"] and board["best"] is None
    assert board["trials"][0]["pruned_at_step"] == 1 and board["trials"][0]["validation_loss"] > 1.0
    run = tmp_path / "runs/tiny-t000"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "pruned" and "validation loss" in manifest["error"]
    assert manifest["sweep"]["trial"] == 0
    steps = [json.loads(line).get("step") for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 1 and not (run / "eval/results.json").exists()
    assert not (tmp_path / "runs/sweeps/tiny/best.yaml").exists()


def test_search_space_ranges_run_the_asked_number_of_trials_within_bounds(sweep_config, tmp_path):
    # Pruned at the first evaluation (see above) to keep each trial short; the trials still count.
    result = invoke("sweep", sweep_config, "--param", "method.lora.r=int:2..8", "--param",
                    "training.learning_rate=log:1e-4..1e-2", "--trials", "2", "--metric", "json_fields",
                    "--pruner", "threshold", "--prune-above", "1.0", "--name", "space")
    assert result.exit_code == 1 and "0 trials finished, 2 to run (search space" in " ".join(result.output.split())
    board = json.loads((tmp_path / "runs/sweeps/space/leaderboard.json").read_text())
    assert board["counts"] == {"pruned": 2} and not board["stopped_by_budget"]
    for trial in board["trials"]:
        r, lr = trial["params"]["method.lora.r"], trial["params"]["training.learning_rate"]
        assert isinstance(r, int) and 2 <= r <= 8 and 1e-4 <= lr <= 1e-2
        config = (Path(trial["run"]) / "config.yaml").read_text()
        assert f"r: {r}\n" in config and f"learning_rate: {lr}" in config
    assert "No trial finished" in (tmp_path / "runs/sweeps/space/leaderboard.html").read_text()
