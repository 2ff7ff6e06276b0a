"""Shared fixtures for the registry tests: one real `tuneforge train` run on a tiny model, and variants of it.

A variant is a copy of the real run directory with its adapter weights perturbed (a different model, same
layout as training writes) and, optionally, its results' per-item scores replaced (a better or worse model).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

QUICKSTART = Path(__file__).resolve().parents[1] / "src/tuneforge/assets/quickstart"


def _head(src: Path, dst: Path, n: int) -> Path:
    dst.write_text("".join(src.read_text().splitlines(keepends=True)[:n]))
    return dst


def invoke(*args):
    from tuneforge.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def train_tiny_run(root: Path, report_to: list[str] = ()) -> Path:
    """root/runs/tiny: a finished LoRA run (adapter + merged + eval/results.json) of a tiny random Llama."""
    from transformers import AutoTokenizer

    from tests.tiny_models import TOKENIZER_DIR, build_tiny_model

    model_dir = root / "tiny-model"
    build_tiny_model().save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(model_dir)
    train = _head(QUICKSTART / "train.jsonl", root / "train.jsonl", 16)
    validation = _head(QUICKSTART / "validation.jsonl", root / "validation.jsonl", 4)
    test = _head(QUICKSTART / "test.jsonl", root / "test.jsonl", 6)
    config = root / "run.yaml"
    config.write_text(
        f"model: {{source: {model_dir}}}\n"
        f"data: {{train: {train}, validation: {validation}, test: {test}, max_length: 96}}\n"
        "training: {max_steps: 2, batch_size: 4, eval_every_steps: 2, save_every_steps: 2, learning_rate: 1.0e-3, "
        f"report_to: [{', '.join(report_to)}]}}\n"
        "eval: {max_new_tokens: 4, batch_size: 6, bootstrap_samples: 100}\n"
        f"output: {{dir: {root / 'runs'}, name: tiny}}\n"
    )
    result = invoke("train", config)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return root / "runs" / "tiny"


def variant(run: Path, name: str, *, seed: int, scores: dict[str, list[float]] | None = None,
            config_edit: tuple[str, str] | None = None) -> Path:
    """A copy of `run` as runs/<name> with different adapter weights (and merged weights), optional new scores."""
    import torch
    from safetensors.torch import load_file, save_file

    target = run.parent / name
    shutil.copytree(run, target)
    for weights in [target / "adapter" / "adapter_model.safetensors", target / "merged" / "model.safetensors"]:
        tensors = load_file(weights)
        generator = torch.Generator().manual_seed(seed)
        key = min(tensors)
        tensors[key] = tensors[key] + 0.01 * torch.randn(tensors[key].shape, generator=generator)
        save_file(tensors, weights, metadata={"format": "pt"})
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["run_name"] = name
    (target / "manifest.json").write_text(json.dumps(manifest))
    if config_edit:
        text = (target / "config.yaml").read_text()
        assert config_edit[0] in text
        (target / "config.yaml").write_text(text.replace(*config_edit))
    if scores:
        set_scores(target, scores)
    return target


def set_scores(run: Path, scores: dict[str, list[float]]) -> None:
    """Replace the tuned model's per-item scores (and the summary means) in run/eval/results.json."""
    path = run / "eval" / "results.json"
    results = json.loads(path.read_text())
    for metric, values in scores.items():
        assert len(values) == len(results["items"])
        for row, value in zip(results["items"], values):
            row["tuned"]["scores"][metric] = value
        results["models"]["tuned"]["summary"][metric] = sum(values) / len(values)
    path.write_text(json.dumps(results))


def fake_run(root: Path, name: str, payload: bytes, **manifest) -> Path:
    """A finished run folder as training writes it (manifest, config, adapter), with made-up weight bytes."""
    run = root / "runs" / name
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_model.safetensors").write_bytes(payload)
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 8, "base_model_name_or_path": "base"}))
    (run / "config.yaml").write_text("model: {source: base}\n")
    (run / "manifest.json").write_text(json.dumps({
        "status": "completed", "base_model": {"source": "smollm2-135m-instruct", "weights_sha256": "ab" * 32},
        "datasets": {}, "git": {"commit": "0" * 40, "dirty": False}, **manifest}))
    return run
