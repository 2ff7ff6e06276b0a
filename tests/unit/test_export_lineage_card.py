"""Export lineage (`tuneforge runs which FILE`) and the generated model card, on a hand-built finished run."""
from __future__ import annotations

import json
import shutil

import pytest
import yaml
from typer.testing import CliRunner


@pytest.fixture()
def finished_run(tmp_path):
    """A run directory as training leaves it: config, manifest with data lineage, results, merged + adapter."""
    from tuneforge.atomic import write_json_atomic
    from tuneforge.runs.rundir import RunDir

    run = RunDir(tmp_path / "runs" / "r1")
    run.merged.mkdir(parents=True)
    (run.merged / "model.safetensors").write_bytes(b"merged weights")
    (run.merged / "config.json").write_text("{}")
    run.adapter.mkdir()
    (run.adapter / "adapter_model.safetensors").write_bytes(b"adapter weights")
    run.config.write_text(yaml.safe_dump({"data": {"train": "train.jsonl", "license": "cc-by-4.0"},
                                          "method": {"name": "lora"}, "objective": {"name": "sft"},
                                          "training": {"max_steps": 5}}))
    write_json_atomic(run.manifest, {
        "run_name": "r1", "tuneforge_version": "0.1.0", "status": "completed", "seed": 42,
        "git": {"commit": "0123456789abcdef", "dirty": False},
        "base_model": {"source": "smollm2-135m-instruct", "weights_sha256": "feed"},
        "datasets": {"train": {"path": "train.jsonl", "rows": 10, "sha256": "d" * 64},
                     "test": {"path": "test.jsonl", "rows": 4, "sha256": "e" * 64}},
        "method": {"name": "lora"}, "training": {"steps": 5, "final_train_loss": 1.25}})
    write_json_atomic(run.eval_dir / "results.json", {
        "task": "test", "n_items": 4, "headline_metric": "exact_match",
        "models": {"base": {"summary": {"exact_match": 0.25}}, "tuned": {"summary": {"exact_match": 0.75}}},
        "comparison": {"exact_match": {"mean_a": 0.25, "mean_b": 0.75, "delta": 0.5, "ci_low": 0.0,
                                       "ci_high": 1.0, "p_value": 0.12, "n": 4}}})
    return run


def test_manifest_records_every_exported_file_and_runs_which_finds_a_copy(finished_run, tmp_path):
    from tuneforge.cli.main import app
    from tuneforge.hashing import sha256_file
    from tuneforge.recipes.export import record_exports

    record_exports(finished_run, {"merged": str(finished_run.merged), "adapter": str(finished_run.adapter)})
    lineage = finished_run.read_manifest()["export_lineage"]
    weights = finished_run.merged / "model.safetensors"
    assert lineage["files"][str(weights.resolve())] == sha256_file(weights)
    assert lineage["config_sha256"] == sha256_file(finished_run.config)
    assert (finished_run.merged / "README.md").is_file() and (finished_run.adapter / "README.md").is_file()

    found = tmp_path / "somewhere" / "renamed.bin"  # a copy found elsewhere on disk, under another name
    found.parent.mkdir()
    shutil.copy(finished_run.adapter / "adapter_model.safetensors", found)
    result = CliRunner().invoke(app, ["runs", "which", str(found), "--runs-dir", str(tmp_path / "runs"), "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["run"] == "r1"
    assert answer["datasets"]["train"]["sha256"] == "d" * 64
    assert answer["code"]["git"]["commit"] == "0123456789abcdef"
    assert answer["base_model"]["weights_sha256"] == "feed"


def test_runs_which_says_clearly_when_no_run_made_the_file(finished_run, tmp_path):
    from tuneforge.cli.main import app

    stranger = tmp_path / "stranger.bin"
    stranger.write_bytes(b"not exported by tuneforge")
    result = CliRunner().invoke(app, ["runs", "which", str(stranger), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code != 0
    assert "was not exported by any run under" in result.output
    assert "Traceback" not in result.output


def test_model_card_front_matter_tables_datasheets_and_licenses(finished_run):
    from tuneforge.export.card import render_card

    card = render_card(finished_run)
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == "smollm2-135m-instruct"
    assert front["license"] == "apache-2.0"  # carried from the catalog entry
    assert front["datasets"] == ["test.jsonl", "train.jsonl"]
    assert "lora" in front["tags"]
    metrics = front["model-index"][0]["results"][0]["metrics"]
    assert metrics == [{"type": "exact_match", "name": "exact_match", "value": 0.75}]
    assert "| exact_match | 0.250 | 0.750 | +0.500 [+0.000, +1.000] | 0.12 |" in card
    assert "### train: train.jsonl" in card and f"sha256: `{'d' * 64}`" in card
    assert "license: cc-by-4.0" in card
    assert "FORBIDDEN" not in card and "UNKNOWN" not in card


def test_card_lists_only_the_settings_of_the_method_and_objective_used():
    from tuneforge.export.card import chosen_settings

    config = {"method": {"name": "qlora", "lora": {"r": 16}, "qlora": {"quant_type": "nf4"}, "ia3": {"x": 1},
                         "prefix": {"num_virtual_tokens": 16}},
              "objective": {"name": "sft", "dpo": {"beta": 0.1}, "kto": {"beta": 0.1}},
              "training": {"max_steps": 40}, "data": {"train": "x"}}
    assert chosen_settings(config) == {"method": {"name": "qlora", "lora": {"r": 16}, "qlora": {"quant_type": "nf4"}},
                                       "objective": {"name": "sft"}, "training": {"max_steps": 40}}
    config["method"]["name"] = "ia3"
    config["objective"]["name"] = "dpo"
    assert chosen_settings(config)["method"] == {"name": "ia3", "ia3": {"x": 1}}
    assert chosen_settings(config)["objective"] == {"name": "dpo", "dpo": {"beta": 0.1}}


def test_license_flags_forbidden_restricted_and_unknown():
    from tuneforge.export.card import license_flags

    flags = license_flags("cc-by-nc-nd-4.0", {"train": "unknown", "test": "cc-by-nc-4.0"})
    assert flags[0].startswith("FORBIDDEN: the base model license (cc-by-nc-nd-4.0)")
    assert flags[1].startswith("UNKNOWN: the dataset train license")
    assert flags[2].startswith("RESTRICTED: the dataset test license (cc-by-nc-4.0)")
    assert license_flags("Apache-2.0", {"train": "mit"}) == []
