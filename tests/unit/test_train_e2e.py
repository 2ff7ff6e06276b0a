"""`tuneforge train` end to end on a tiny random model: the run directory, lineage, exports and report."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tuneforge.cli.main import app

QUICKSTART = Path(__file__).resolve().parents[2] / "src/tuneforge/assets/quickstart"


def _head(src: Path, dst: Path, n: int) -> Path:
    dst.write_text("".join(src.read_text().splitlines(keepends=True)[:n]))
    return dst


@pytest.fixture()
def tiny_run_config(tmp_path, tiny_model_dir):
    train = _head(QUICKSTART / "train.jsonl", tmp_path / "train.jsonl", 24)
    validation = _head(QUICKSTART / "validation.jsonl", tmp_path / "validation.jsonl", 6)
    test = _head(QUICKSTART / "test.jsonl", tmp_path / "test.jsonl", 6)
    config = tmp_path / "run.yaml"
    config.write_text(
        "# tuneforge train run.yaml\n"
        f"model: {{source: {tiny_model_dir}}}\n"
        f"data: {{train: {train}, validation: {validation}, test: {test}, max_length: 128}}\n"
        "training: {max_steps: 4, batch_size: 4, eval_every_steps: 2, save_every_steps: 2, learning_rate: 1.0e-3}\n"
        "eval: {max_new_tokens: 6, batch_size: 3, bootstrap_samples: 200}\n"
        f"output: {{dir: {tmp_path / 'runs'}, name: tiny}}\n"
    )
    return config


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result


def test_train_writes_a_complete_traceable_run(tiny_run_config, tmp_path, tiny_model_dir):
    result = invoke("train", tiny_run_config)
    assert result.exit_code == 0, result.output + repr(result.exception)
    run = tmp_path / "runs" / "tiny"

    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["finished_at"]
    assert manifest["seed"] == 42 and manifest["tuneforge_version"]
    assert {"torch", "transformers", "trl", "peft"} <= set(manifest["packages"])
    train_file = tmp_path / "train.jsonl"
    assert manifest["datasets"]["train"]["sha256"] == hashlib.sha256(train_file.read_bytes()).hexdigest()
    assert manifest["datasets"]["train"]["rows"] == 24 and manifest["datasets"]["test"]["rows"] == 6
    weights = hashlib.sha256((tiny_model_dir / "model.safetensors").read_bytes()).hexdigest()
    assert manifest["base_model"]["weights_sha256"] == weights and manifest["base_model"]["kind"] == "folder"
    assert manifest["training"]["steps"] == 4
    assert 0.0 <= manifest["training"]["padding_share"] < 0.5
    assert manifest["method"]["parameters"]["trainable"] == 2 * (4 * 16 * 64) + 2 * (2 * (16 * 64 + 16 * 32))

    # the resolved config is written and is itself a valid config
    check = invoke("config", "validate", run / "config.yaml")
    assert check.exit_code == 0, check.output

    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_lines = [rec for rec in lines if "loss" in rec]
    assert [rec["step"] for rec in train_lines] == [1, 2, 3, 4]
    assert all(rec["tokens_per_second"] > 0 for rec in train_lines)
    assert [rec["step"] for rec in lines if "eval_loss" in rec] == [2, 4]

    assert sorted(p.name for p in (run / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    results = json.loads((run / "eval" / "results.json").read_text())
    assert results["n_items"] == 6 and set(results["comparison"]) == {"json_fields", "exact_match"}
    base = results["models"]["base"]
    assert base["validation_loss"]["loss"] > 0 and base["validation_loss"]["split"] == "validation"
    assert base["summary"]["validation_loss"] == base["validation_loss"]["loss"]  # gateable
    assert results["headline_metric"] == "json_fields" and len(results["items"]) == 6
    html = (run / "report.html").read_text()
    assert "<svg" in html and "json_fields" in html and manifest["datasets"]["train"]["sha256"] in html


def test_merged_export_equals_adapter_and_loads_with_plain_transformers(tiny_run_config, tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert invoke("train", tiny_run_config).exit_code == 0
    run = tmp_path / "runs" / "tiny"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["exports"]["merged_max_abs_logit_diff_vs_adapter"] <= 1e-4

    merged = AutoModelForCausalLM.from_pretrained(run / "merged")
    tokenizer = AutoTokenizer.from_pretrained(run / "merged")
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(tiny_model_dir).chat_template
    assert merged.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run / "adapter")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    batch = tokenizer(["Extract the contact as JSON: Ada Byron, Analytic Engines, London"], return_tensors="pt")
    with torch.no_grad():
        merged_logits = merged.eval()(**batch).logits
        adapter_logits = adapted.eval()(**batch).logits
        base_logits = base.eval()(**batch).logits
    assert (merged_logits - adapter_logits).abs().max() <= 1e-4
    assert (merged_logits - base_logits).abs().max() > 1e-4  # training changed something

    # `tuneforge export` rebuilds the merged folder from the adapter alone
    out = tmp_path / "re-exported"
    result = invoke("export", run, "--out", out)
    assert result.exit_code == 0, result.output
    again = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        assert (again.eval()(**batch).logits - merged_logits).abs().max() <= 1e-4


def test_runs_ls_show_and_eval_read_the_run(tiny_run_config, tmp_path):
    assert invoke("train", tiny_run_config).exit_code == 0
    runs_dir = tmp_path / "runs"
    listing = invoke("runs", "ls", "--runs-dir", runs_dir)
    assert listing.exit_code == 0 and "tiny" in listing.output and "completed" in listing.output
    shown = invoke("runs", "show", "tiny", "--runs-dir", runs_dir, "--json")
    assert shown.exit_code == 0
    payload = json.loads(shown.output)
    assert payload["manifest"]["run_name"] == "tiny" and "comparison" in payload["results"]
    human = invoke("runs", "show", "tiny", "--runs-dir", runs_dir)
    assert human.exit_code == 0 and "(folder), weights sha256" in human.output  # [folder] would vanish as markup
    missing = invoke("runs", "show", "nope", "--runs-dir", runs_dir)
    assert missing.exit_code != 0

    evaluated = invoke("eval", runs_dir / "tiny", "--data", tmp_path / "test.jsonl", "--max-new-tokens", 4,
                       "--out", tmp_path / "ev")
    assert evaluated.exit_code == 0, evaluated.output + repr(evaluated.exception)
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert results["n_items"] == 6 and "comparison" in results


def test_same_seed_same_losses_and_full_finetuning(tiny_run_config, tmp_path):
    assert invoke("train", tiny_run_config, "output.name=a").exit_code == 0
    assert invoke("train", tiny_run_config, "output.name=b").exit_code == 0
    full = invoke("train", tiny_run_config, "output.name=full", "method.name=full", "training.learning_rate=1e-4")
    assert full.exit_code == 0, full.output + repr(full.exception)

    def losses(name):
        lines = (tmp_path / "runs" / name / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["loss"] for line in lines if '"loss"' in line]

    assert losses("a") == losses("b")
    full_run = tmp_path / "runs" / "full"
    assert not (full_run / "adapter").exists() and (full_run / "merged" / "model.safetensors").is_file()
    manifest = json.loads((full_run / "manifest.json").read_text())
    assert manifest["method"]["parameters"]["share"] == 1.0


def test_early_stopping_stops_when_eval_loss_does_not_improve(tiny_run_config, tmp_path):
    # A learning rate this large makes the tiny model diverge, so eval loss rises and patience runs out.
    result = invoke("train", tiny_run_config, "training.max_steps=40", "training.learning_rate=3.0",
                    "training.eval_every_steps=1", "training.early_stopping_patience=2",
                    "training.lr_scheduler=constant", "training.warmup_ratio=0")
    assert result.exit_code == 0, result.output + repr(result.exception)
    manifest = json.loads((tmp_path / "runs" / "tiny" / "manifest.json").read_text())
    assert manifest["training"]["stopped_early"] is True
    assert manifest["training"]["steps"] < 40
    assert manifest["training"]["best_checkpoint"]


def test_bad_config_exits_nonzero_with_key_and_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("data:\n  train: x.jsonl\nmethod:\n  nme: lora\n")
    result = invoke("train", config)
    assert result.exit_code == 2
    assert f"{config}:4: method.nme: unknown key" in result.output


def test_missing_data_file_fails_cleanly_and_marks_the_run_failed(tmp_path, tiny_model_dir):
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {{source: {tiny_model_dir}}}\ndata: {{train: {tmp_path / 'nope.jsonl'}}}\n"
                      f"output: {{dir: {tmp_path / 'runs'}, name: broken}}\n")
    result = invoke("train", config)
    assert result.exit_code != 0
    manifest = json.loads((tmp_path / "runs" / "broken" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "nope.jsonl" in manifest["error"]


def test_a_run_and_tuneforge_eval_write_one_results_layout_that_one_gate_file_reads(tiny_run_config, tmp_path):
    """A training run's evaluation is `tuneforge eval`: same items, same scores, same layout; the shipped quickstart
    gate file reads both (exit 1 for failed thresholds of a tiny random model, never 2 for an unknown name)."""
    repo = Path(__file__).resolve().parents[2]
    metrics = "[json_fields,exact_match,rougeL,perplexity]"
    assert invoke("train", tiny_run_config, f"eval.metrics={metrics}").exit_code == 0
    run = tmp_path / "runs" / "tiny"
    trained = json.loads((run / "eval" / "results.json").read_text())
    assert trained["metrics"] == ["json_fields", "exact_match", "rougeL", "perplexity"]
    for side in ("base", "tuned"):
        summary = trained["models"][side]["summary"]
        assert summary["perplexity"] > 1 and summary["validation_loss"] > 0
    assert {"json_fields", "exact_match", "rougeL"} <= set(trained["comparison"])

    out = tmp_path / "standalone"
    test_file = tmp_path / "test.jsonl"
    result = invoke("eval", run, "--data", test_file, "--metric", metrics.strip("[]"), "--max-new-tokens", 6,
                    "--batch-size", 3, "--out", out, "--no-report")
    assert result.exit_code == 0, result.output
    evaluated = json.loads((out / "results.json").read_text())
    assert set(evaluated) >= {"task", "headline_metric", "metrics", "n_items", "models", "comparison", "items"}
    assert set(trained) >= set(evaluated) - {"contamination", "judge"}
    # The merged tuned model answers exactly as the trained model did in the run (greedy, same prompts).
    tuned_by_id = {row["id"]: row["tuned"]["prediction"] for row in trained["items"]}
    assert {row["id"]: row["tuned"]["prediction"] for row in evaluated["items"]} == tuned_by_id
    assert evaluated["models"]["tuned"]["summary"]["perplexity"] == pytest.approx(
        trained["models"]["tuned"]["summary"]["perplexity"], rel=1e-3)

    for results in (run / "eval" / "results.json", out / "results.json"):
        gated = invoke("gate", results, "--gates", repo / "examples" / "gates" / "quickstart.yaml")
        assert gated.exit_code in (0, 1), gated.output  # 2 would mean the file names a metric nothing knows
        assert "unknown metric" not in gated.output
        verdicts = json.loads(results.with_name("gates.json").read_text())
        assert len(verdicts["outcomes"]) == 7 and verdicts["passed"] == (gated.exit_code == 0)
    # The run report was re-rendered with the verdicts.
    assert "json_fields delta_vs_base ci_low" in (run / "report.html").read_text()


@pytest.mark.parametrize("precision", [["model.dtype=bfloat16"], ["training.frozen_base_dtype=bfloat16"]],
                         ids=["bf16-model", "bf16-held-while-training"])
def test_a_bf16_base_under_autocast_trains_evaluates_and_merges(tiny_run_config, tmp_path, precision):
    """A bf16 base under bf16 autocast: the merge check compares plain float32 forwards. Before: accelerate's autocast
    wrapper stayed on the trained model's forward and the bf16 merge rounded the adapter's delta away, and the
    quickstart's merge check failed (0.79 logits apart). frozen_base_dtype holds it in bf16 only while training."""
    result = invoke("train", tiny_run_config, *precision, "training.mixed_precision=bf16")
    assert result.exit_code == 0, result.output + repr(result.exception)
    run = tmp_path / "runs" / "tiny"
    if precision == ["model.dtype=bfloat16"]:
        assert "precision weights bfloat16, bf16 autocast" in result.output
    else:
        assert "precision weights float32; the frozen base held in bfloat16 while training, bf16 autocast" \
            in result.output
    exports = json.loads((run / "manifest.json").read_text())["exports"]
    assert exports["merged_max_abs_logit_diff_vs_adapter"] <= 1e-4
    from safetensors import safe_open

    with safe_open(str(run / "merged" / "model.safetensors"), "pt") as weights:
        assert {weights.get_tensor(key).dtype for key in weights.keys()} == {torch.float32}


def test_cast_frozen_keeps_trainable_parameters_and_ties(tiny_model):
    from peft import LoraConfig, get_peft_model

    from tuneforge.train.frozen_dtype import cast_frozen

    tiny_model.config.tie_word_embeddings = True
    tiny_model.tie_weights()
    model = get_peft_model(tiny_model, LoraConfig(r=2, target_modules=["q_proj"]))
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert cast_frozen(model, torch.bfloat16) > 0
    for name, param in model.named_parameters():
        assert param.dtype == (torch.float32 if param.requires_grad else torch.bfloat16), name
    base = model.get_base_model()
    assert base.lm_head.weight is base.model.embed_tokens.weight  # still one tensor
    cast_frozen(model, torch.float32)  # exact: a bf16 value is a float32 value
    for name, param in model.named_parameters():
        assert torch.equal(param, original[name].to(torch.bfloat16).float() if not param.requires_grad
                           else original[name]), name
