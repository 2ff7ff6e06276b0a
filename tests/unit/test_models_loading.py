"""load_tokenizer / load_model / context_window on a local tiny model, and the `models` CLI."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from test_models_sources import fake_catalog, gguf_file  # noqa: F401 - fixtures reused by the CLI tests
from transformers import LlamaConfig, PretrainedConfig
from typer.testing import CliRunner

from tuneforge.cli.models import app
from tuneforge.errors import ModelSourceError
from tuneforge.models.loading import context_window, load_model, load_tokenizer
from tuneforge.models.sources import resolve_model


def test_load_tokenizer_sets_pad_to_eos_when_missing_and_pads_right(tiny_model_dir):
    config_path = tiny_model_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("pad_token", None)
    config["padding_side"] = "left"
    config_path.write_text(json.dumps(config))

    tokenizer = load_tokenizer(resolve_model(str(tiny_model_dir)))
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.padding_side == "right"
    batch = tokenizer(["hi", "a longer sentence here"], padding=True)
    assert batch["input_ids"][0][-1] == tokenizer.pad_token_id and batch["attention_mask"][0][-1] == 0


def test_chat_template_override_replaces_the_models_template(tiny_model_dir, tmp_path):
    template = tmp_path / "plain.jinja"
    template.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")
    tokenizer = load_tokenizer(resolve_model(str(tiny_model_dir)), chat_template_path=str(template))
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert rendered == "[user] hi\n"


def test_missing_chat_template_file_is_an_error_naming_it(tiny_model_dir, tmp_path):
    missing = tmp_path / "nope.jinja"
    with pytest.raises(ModelSourceError, match="chat template file .*nope.jinja does not exist"):
        load_tokenizer(resolve_model(str(tiny_model_dir)), chat_template_path=str(missing))


def test_load_model_in_requested_dtype_not_in_eval_mode(tiny_model_dir):
    resolved = resolve_model(str(tiny_model_dir))
    model = load_model(resolved)
    assert model.dtype == torch.float32 and model.config.num_hidden_layers == 2
    assert load_model(resolved, dtype="bf16").dtype == torch.bfloat16
    with pytest.raises(ModelSourceError, match="unknown dtype 'float8'"):
        load_model(resolved, dtype="float8")


def test_broken_local_folder_gives_a_model_source_error(tiny_model_dir):
    (tiny_model_dir / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelSourceError, match="could not load the model"):
        load_model(resolve_model(str(tiny_model_dir)))


def test_context_window_reads_the_usual_config_keys():
    assert context_window(LlamaConfig(max_position_embeddings=4096)) == 4096
    assert context_window(PretrainedConfig(n_positions=1024)) == 1024
    nested = PretrainedConfig()
    nested.text_config = PretrainedConfig(max_position_embeddings=32768)
    assert context_window(nested) == 32768
    assert context_window(PretrainedConfig()) is None


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_ls_then_fetch_then_ls(fake_catalog, tmp_path):  # noqa: F811
    runner = CliRunner()
    cache = tmp_path / "cli-cache"
    listing = runner.invoke(app, ["ls", "--cache-dir", str(cache)], env={"COLUMNS": "250"})
    assert listing.exit_code == 0, listing.output
    assert "smollm2-135m-instruct" in listing.output and "tiny-test" in listing.output
    assert "not fetched" in listing.output

    fetched = runner.invoke(app, ["fetch", "tiny-test", "--cache-dir", str(cache)])
    assert fetched.exit_code == 0, fetched.output
    folder = Path(fetched.stdout.strip().splitlines()[-1])
    assert folder == cache / "models" / "tiny-test" and (folder / "tuneforge-source.json").is_file()

    listing = runner.invoke(app, ["ls", "--cache-dir", str(cache)], env={"COLUMNS": "250"})
    row = next(line for line in listing.output.splitlines() if "tiny-test" in line)
    assert "verified" in row and "not fetched" not in row


def test_cli_fetch_of_a_missing_path_exits_non_zero_with_the_message(tmp_path):
    result = CliRunner().invoke(app, ["fetch", str(tmp_path / "missing.gguf")])
    assert result.exit_code == 1
    assert "does not exist" in result.output and "hint:" in result.output
    assert not isinstance(result.exception, ModelSourceError)  # handled, no traceback


def test_cli_fetch_converts_a_gguf_path(gguf_file, tmp_path):  # noqa: F811
    copy = tmp_path / "model.gguf"
    shutil.copyfile(gguf_file, copy)
    result = CliRunner().invoke(app, ["fetch", str(copy), "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert Path(result.stdout.strip().splitlines()[-1]).parent == tmp_path / "c" / "models"
