"""`tuneforge train examples/objective-<name>.yaml` end to end on a tiny model: the run directory is complete and
holds each objective's own evidence (per-task slices, recorded rewards, held-out accuracies)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
OBJECTIVES = ["cpt", "multitask", "dpo", "kto", "orpo", "reward", "rl"]


def run_cli(name: str, model_dir: Path, out: Path, *extra: str):
    from typer.testing import CliRunner

    from tuneforge.cli.main import app

    overrides = [f"model.source={model_dir}", "training.max_steps=2", "training.batch_size=2",
                 "training.eval_every_steps=2", "training.save_every_steps=2", "data.max_length=96",
                 "eval.max_items=4", "eval.max_new_tokens=8", "eval.batch_size=4", "eval.bootstrap_samples=200",
                 f"output.dir={out}", f"output.name={name}", *extra]
    result = CliRunner().invoke(app, ["train", str(REPO / "examples" / f"objective-{name}.yaml"), *overrides])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out / name


def test_every_objective_has_an_example_headed_by_its_command():
    for name in OBJECTIVES:
        path = REPO / "examples" / f"objective-{name}.yaml"
        assert path.read_text().startswith(f"# tuneforge train examples/objective-{name}.yaml")
        assert yaml.safe_load(path.read_text())["objective"]["name"] == name


@pytest.mark.parametrize("name", OBJECTIVES)
def test_objective_cli_run_directory_is_complete(name, tiny_model_dir, tmp_path):
    extra = ("objective.rl.num_generations=2", "objective.rl.max_completion_length=8") if name == "rl" else ()
    run = run_cli(name, tiny_model_dir, tmp_path / "runs", *extra)
    for artifact in ("config.yaml", "manifest.json", "metrics.jsonl", "report.html", "adapter", "merged"):
        assert (run / artifact).exists(), artifact
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert manifest["datasets"] and all(len(d["sha256"]) == 64 for d in manifest["datasets"].values())
    assert manifest["training"]["steps"] == 2 and manifest["training"]["objective"] == name
    assert manifest["training"]["final_train_loss"] is not None
    from typer.testing import CliRunner

    from tuneforge.cli.main import app

    shown = CliRunner().invoke(app, ["runs", "show", str(run)])
    assert shown.exit_code == 0 and "training: 2 steps, train loss" in shown.output, shown.output
    assert not (run / "adapter" / "ref").exists()  # TRL's reference adapter copy is not exported
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics
    results = json.loads((run / "eval" / "results.json").read_text())
    assert results["objective"] == name
    tuned = results["models"]["tuned"]
    if name == "multitask":
        for label in ("base", "tuned"):
            slices = results["models"][label]["slices"]
            assert set(slices) == {"city", "contact_json"}
            for task in slices.values():
                assert task["validation_loss"] > 0 and "exact_match" in task and task["item_count"] == 4
    if name == "rl":
        assert any("reward" in m for m in metrics)
        assert any("rewards/json_valid/mean" in m for m in metrics)
    if name in ("dpo", "orpo"):
        assert 0.0 <= tuned["objective_metrics"]["preference_accuracy"] <= 1.0
        assert "base" in results["models"] and "comparison" in results
    if name == "reward":
        assert 0.0 <= tuned["objective_metrics"]["reward_accuracy"] <= 1.0
        config = json.loads((run / "merged" / "config.json").read_text())
        assert config["architectures"][0].endswith("ForSequenceClassification")
        _adapter_alone_rebuilds_the_reward_model(run, tiny_model_dir)
    if name == "cpt":
        assert tuned["validation_loss"]["loss"] > 0 and not results["comparison"]


def _adapter_alone_rebuilds_the_reward_model(run: Path, base_dir: Path) -> None:
    """The trained score head travels in adapter/ (PEFT modules_to_save): adapter on a fresh base scores exactly like
    merged/, and `tuneforge export` rebuilds the merge from the adapter."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification
    from typer.testing import CliRunner

    from tuneforge.cli.main import app
    from tuneforge.config.loader import load_config
    from tuneforge.methods import get_method
    from tuneforge.models.sources import resolve_model
    from tuneforge.objectives.reward import as_reward_model

    adapter_keys = load_file(run / "adapter" / "adapter_model.safetensors").keys()
    assert any("score" in key for key in adapter_keys), sorted(adapter_keys)
    cfg = load_config(run / "config.yaml")
    base = get_method(cfg.method).load_base(resolve_model(str(base_dir)), cfg.model.dtype)  # QLoRA: the 4-bit base
    torch.manual_seed(1234)  # the fresh head is random; the adapter must overwrite it
    rebuilt = PeftModel.from_pretrained(as_reward_model(base), str(run / "adapter")).eval()
    merged = AutoModelForSequenceClassification.from_pretrained(run / "merged").eval()
    ids = torch.tensor([[5, 17, 42, 99, 7], [3, 8, 13, 21, 34]])
    with torch.no_grad():
        want, got = merged(input_ids=ids).logits, rebuilt(input_ids=ids).logits
    assert want.shape == (2, 1)
    assert torch.allclose(got, want, atol=1e-4), (got, want)

    result = CliRunner().invoke(app, ["export", str(run), "--out", str(run.parent / "reward-export")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    exported = AutoModelForSequenceClassification.from_pretrained(run.parent / "reward-export").eval()
    with torch.no_grad():
        assert torch.allclose(exported(input_ids=ids).logits, want, atol=1e-4)


@pytest.mark.parametrize("method", ["qlora", "ia3", "prefix", "prompt"])
def test_reward_model_under_every_adapter_method(method, tiny_model_dir, tmp_path):
    """QLoRA: the classifier shares the 4-bit backbone, so merging dequantises through it. Prefix/prompt tuning:
    PEFT switches them off through a generation hook a classifier lacks (integrations/peft_seqcls.py)."""
    run = run_cli("reward", tiny_model_dir, tmp_path / "runs", f"method.name={method}")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["method"]["name"] == method
    results = json.loads((run / "eval" / "results.json").read_text())
    assert {"base", "tuned"} <= set(results["models"])
    if method in ("prefix", "prompt"):  # they learn inputs, not weight deltas: nothing to merge
        from safetensors.torch import load_file

        assert any("score" in key for key in load_file(run / "adapter" / "adapter_model.safetensors"))
    else:
        _adapter_alone_rebuilds_the_reward_model(run, tiny_model_dir)


@pytest.mark.parametrize("name", ["dpo", "kto"])
def test_qlora_adapters_keep_their_dtype_under_trl_preference_trainers(name, tiny_model_dir, tmp_path):
    """TRL's DPO/KTO trainers cast a 4-bit model's trainable parameters to bf16; integrations/trl_dtypes.py keeps the
    fp32 adapters PEFT made (as under SFT), so the saved adapter is fp32 too."""
    import torch
    from safetensors.torch import load_file

    run = run_cli(name, tiny_model_dir, tmp_path / "runs", "method.name=qlora")
    tensors = load_file(run / "adapter" / "adapter_model.safetensors")
    assert tensors and {t.dtype for t in tensors.values()} == {torch.float32}
