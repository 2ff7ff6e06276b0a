"""data.max_length beyond the model's context window is an error (unless explicitly allowed), at run start and in
`tuneforge config validate` for a local model folder."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from tuneforge.cli.main import app
from tuneforge.errors import ConfigError
from tuneforge.models.loading import check_context_window, context_window

TINY_WINDOW = 512  # tests/tiny_models.py: max_position_embeddings


def _data(max_length: int, allow: bool = False):
    return SimpleNamespace(max_length=max_length, allow_longer_than_context=allow)


def test_check_names_both_numbers_and_the_way_out():
    config = SimpleNamespace(max_position_embeddings=2048)
    with pytest.raises(ConfigError) as caught:
        check_context_window(_data(4096), config, "my-model")
    assert "data.max_length 4096" in caught.value.message and "2048" in caught.value.message
    assert "my-model" in caught.value.message and "allow_longer_than_context" in caught.value.hint
    check_context_window(_data(2048), config, "my-model")        # equal is fine
    check_context_window(_data(4096, allow=True), config, "m")    # RoPE-scaled on purpose
    check_context_window(_data(4096), SimpleNamespace(), "m")     # the config does not say: nothing to check


def test_context_window_reads_a_plain_config_json_dict_too():
    assert context_window({"max_position_embeddings": 4096}) == 4096
    assert context_window({"text_config": {"n_positions": 1024}}) == 1024
    assert context_window({"hidden_size": 8}) is None


def _config(tmp_path, tiny_model_dir, max_length: int, extra: str = "") -> str:
    rows = [{"messages": [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": str(i)}]}
            for i in range(8)]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "run.yaml"
    path.write_text(
        f"model: {{source: {tiny_model_dir}}}\n"
        "data:\n"
        f"  train: {train}\n"
        f"  max_length: {max_length}\n"
        f"{extra}"
        "training: {max_steps: 2, batch_size: 4}\n"
        "eval: {compare_base: false}\n"
        "export: {merged: false}\n"
        f"output: {{dir: {tmp_path / 'runs'}, name: long}}\n"
    )
    return str(path)


def test_train_stops_before_training_when_max_length_exceeds_the_window(tmp_path, tiny_model_dir):
    result = CliRunner().invoke(app, ["train", _config(tmp_path, tiny_model_dir, 1024)])
    assert result.exit_code == 2, result.output
    assert "data.max_length 1024" in result.output and f"context window of {TINY_WINDOW}" in result.output
    run = tmp_path / "runs" / "long"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "1024" in manifest["error"]
    assert not (run / "metrics.jsonl").exists() and not (run / "checkpoints").exists()  # nothing trained


def test_config_validate_checks_a_local_model_folder_without_loading_it(tmp_path, tiny_model_dir):
    too_long = _config(tmp_path, tiny_model_dir, 1024)
    result = CliRunner().invoke(app, ["config", "validate", too_long])
    assert result.exit_code == 2, result.output
    assert f"{too_long}:4: data.max_length: 1024 exceeds the context window of {TINY_WINDOW}" in result.output

    allowed = _config(tmp_path, tiny_model_dir, 1024, extra="  allow_longer_than_context: true\n")
    assert CliRunner().invoke(app, ["config", "validate", allowed]).exit_code == 0
    fits = _config(tmp_path, tiny_model_dir, 512)
    assert CliRunner().invoke(app, ["config", "validate", fits]).exit_code == 0
    # An override is named as the place of the error.
    result = CliRunner().invoke(app, ["config", "validate", fits, "data.max_length=600"])
    assert result.exit_code == 2 and "'data.max_length=600'" in result.output and "600" in result.output
