"""2-process DDP (torchrun, gloo on CPU) == 1 process with the doubled batch, through `tuneforge train --nproc 2`.

Why the data order matches: with `batching: padded` the Trainer samples with a seeded random permutation that
is the same on every rank; accelerate's batch-sampler sharding hands rank r the batches r, r+2, ... of size B,
so one global step of 2 ranks x B sees exactly the 2B examples one process sees with batch 2B. The loss is
averaged over all trained tokens of the global batch (transformers' `average_tokens_across_devices`), so the
gradients agree up to float summation order. LoRA dropout is 0 (each rank draws its own dropout masks).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file


def _config(tmp_path: Path, model_dir: Path) -> Path:
    data = tmp_path / "train.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"Say the number {i}" + " please" * (i % 5)},
                          {"role": "assistant", "content": f"{i} " * (1 + i % 3)}]} for i in range(16)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {
        "model": {"source": str(model_dir)},
        "data": {"train": str(data), "max_length": 64},
        "method": {"name": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
        "training": {"max_steps": 4, "batch_size": 2, "batching": "padded", "learning_rate": 5e-3,
                     "warmup_ratio": 0.0, "save_every_steps": 100, "num_threads": 1, "seed": 3},
        "eval": {"compare_base": False},
        "export": {"adapter": True, "merged": False},
        "output": {"dir": str(tmp_path / "runs"), "name": "ddp2"},
    }
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _losses(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r}


@pytest.mark.timeout(420)
def test_two_process_ddp_matches_one_process_with_doubled_batch(tmp_path, tiny_model_dir):
    config = _config(tmp_path, tiny_model_dir)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("RANK", None), env.pop("WORLD_SIZE", None), env.pop("LOCAL_RANK", None)
    done = subprocess.run([sys.executable, "-m", "tuneforge.cli.main", "train", str(config), "--nproc", "2"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    ddp_run = tmp_path / "runs" / "ddp2"
    manifest = json.loads((ddp_run / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    # Rank 0 alone wrote the run dir: one record per step, one progress bar, one rng state per rank in checkpoints.
    assert sorted(_losses(ddp_run)) == [1, 2, 3, 4]
    assert done.stderr.count("trained 4 steps") == 1
    # 4 steps of the global batch of 4 over 16 examples is one epoch: both ranks' batches were counted.
    assert _losses(ddp_run)[4]["epoch"] == pytest.approx(1.0)

    # The reference run gets a fresh process too: in a pytest worker that had run other tests first, the in-process
    # run's step-1 grad_norm once came out 0.7425 instead of 0.9622 (which a fresh process and both loss paths give);
    # the leaking test is not found yet (see the issue notes), and equivalence must not depend on it.
    single = subprocess.run([sys.executable, "-m", "tuneforge.cli.main", "train", str(config),
                             "training.batch_size=4", "output.name=single"], env=env, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-4000:]
    single_run = tmp_path / "runs" / "single"

    got, want = _losses(ddp_run), _losses(single_run)
    for step in want:
        assert got[step]["loss"] == pytest.approx(want[step]["loss"], rel=1e-5), step
        assert got[step]["grad_norm"] == pytest.approx(want[step]["grad_norm"], rel=1e-4), step
    ddp_weights = load_file(ddp_run / "adapter" / "adapter_model.safetensors")
    single_weights = load_file(single_run / "adapter" / "adapter_model.safetensors")
    assert any(float(t.abs().max()) > 1e-3 for k, t in single_weights.items() if "lora_B" in k)
    for key, tensor in single_weights.items():
        assert (ddp_weights[key] - tensor).abs().max().item() < 1e-5, key
