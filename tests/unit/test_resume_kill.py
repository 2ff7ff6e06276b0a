"""`tuneforge train --resume` after a SIGKILL gives the same weights and losses as a run that was never stopped.

The child process is the real CLI; a small hook (below) makes it stop *inside* the save of checkpoint-6, after the
weights and optimizer are written but before the RNG state, trainer state and completion marker. The test kills
it there with SIGKILL, so what is on disk is exactly what a crash during a save leaves behind. No timing is
involved: the test waits for the hook's "parked" file, however slow the machine is.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

KILL_AT_SAVE = 6

# Runs `tuneforge train` after making the Trainer park (sleep) in the middle of checkpoint-6's save.
CHILD = """
import sys, time, pathlib
from transformers import Trainer
original = Trainer._save_rng_state
def parking_save_rng_state(self, output_dir):
    if self.state.global_step == {step}:
        pathlib.Path({parked!r}).write_text(output_dir)
        time.sleep(3600)
    return original(self, output_dir)
Trainer._save_rng_state = parking_save_rng_state
from tuneforge.cli.main import main
sys.argv = ["tuneforge", "train", {config!r}]
main()
"""


def _write_data(path: Path) -> None:
    cities = ["Oslo", "Lima", "Pune", "Graz", "Kyoto", "Accra", "Quito", "Perth"]
    rows = []
    for i in range(24):
        extra = " It was a long and rainy week." * (i % 4)
        rows.append({"messages": [
            {"role": "user", "content": f"Where does person {i} live?{extra} They live in {cities[i % 8]}."},
            {"role": "assistant", "content": cities[i % 8]},
        ]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _config(tmp_path: Path, model_dir: Path, name: str) -> Path:
    data = tmp_path / "train.jsonl"
    if not data.exists():
        _write_data(data)
    cfg = {
        "model": {"source": str(model_dir)},
        "data": {"train": str(data), "max_length": 96},
        # LoRA dropout stays on: equal results need the RNG state restored, not just weights and optimizer.
        "method": {"name": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.1}},
        "training": {"max_steps": 8, "batch_size": 2, "save_every_steps": 2, "save_total_limit": 3,
                     "learning_rate": 5e-3, "warmup_ratio": 0.1, "num_threads": 1, "seed": 7},
        "eval": {"compare_base": False},
        "export": {"adapter": True, "merged": False},
        "output": {"dir": str(tmp_path / "runs"), "name": name},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train_records(metrics: Path) -> dict[int, dict]:
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    return {r["step"]: r for r in records if "loss" in r}


def manifest_training(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())["training"]


def _cli(*args: str):
    from tuneforge.cli.main import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.mark.timeout(300)
def test_sigkill_during_save_then_resume_matches_uninterrupted_run(tmp_path, tiny_model_dir):
    config = _config(tmp_path, tiny_model_dir, "killed")
    run = tmp_path / "runs" / "killed"
    parked = tmp_path / "parked"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(step=KILL_AT_SAVE, parked=str(parked), config=str(config))],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        while not parked.exists():
            if child.poll() is not None:
                pytest.fail(f"training exited ({child.returncode}) before checkpoint-{KILL_AT_SAVE}:\n"
                            + child.stderr.read().decode()[-3000:])
            time.sleep(0.2)
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()

    half_written = run / "checkpoints" / f"checkpoint-{KILL_AT_SAVE}"
    assert (half_written / "adapter_model.safetensors").is_file()  # weights written ...
    assert not (half_written / "trainer_state.json").exists()     # ... the rest of the save never happened
    assert not (run / "adapter").exists()
    # The killed process could not record its end; its pid is gone, so the run reads as interrupted.
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"
    shown = json.loads(_cli("runs", "show", str(run), "--json").output)
    assert shown["status"] == "interrupted" and f"process {child.pid}" in shown["status_reason"]

    resumed = _cli("train", str(config), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert f"not resuming from checkpoint-{KILL_AT_SAVE}: no completion marker" in resumed.output
    assert "from checkpoint-4 (step 4" in resumed.output
    # Set aside on resume, then deleted once the resumed run saved step 6 again, completely.
    assert f"removed untrusted-checkpoint-{KILL_AT_SAVE}: superseded by trusted checkpoint-{KILL_AT_SAVE}" \
        in resumed.output
    assert not (run / "checkpoints" / f"untrusted-checkpoint-{KILL_AT_SAVE}").exists()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["resumes"][0]["from_step"] == 4

    reference = _cli("train", str(_config(tmp_path, tiny_model_dir, "reference")))
    assert reference.exit_code == 0, reference.output
    ref_run = tmp_path / "runs" / "reference"

    # The run's train-loss summary covers all 8 steps, not only those after the resume.
    summary, ref_summary = manifest_training(run), manifest_training(ref_run)
    for key in ("train_loss", "final_train_loss"):
        assert summary[key] == pytest.approx(ref_summary[key], rel=1e-4), key

    got, want = _train_records(run / "metrics.jsonl"), _train_records(ref_run / "metrics.jsonl")
    assert sorted(got) == sorted(want) == list(range(1, 9))  # no step lost, none logged twice
    for step in want:
        for key in ("loss", "grad_norm", "learning_rate"):
            assert got[step][key] == pytest.approx(want[step][key], rel=1e-4, abs=1e-6), (step, key)
    # Training did move the adapter, so equal weights are not trivially equal.
    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    ref_weights = load_file(ref_run / "adapter" / "adapter_model.safetensors")
    assert weights.keys() == ref_weights.keys()
    assert any(float(t.abs().max()) > 0 for k, t in ref_weights.items() if "lora_B" in k)
    for key, tensor in ref_weights.items():
        assert (weights[key] - tensor).abs().max().item() < 1e-5, key
