"""The serve YAML is strict and its errors name file, line and key; a run serves with zero config; the CLI."""
from __future__ import annotations

import json

import pytest

from tests.serve_helpers import tiny_adapter
from tuneforge.errors import ConfigError
from tuneforge.serve.config import ServeConfig, config_for_run, load_serve_config


def test_misspelt_key_names_file_line_and_key(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("base: smollm2-135m-instruct\nadapters:\n  - name: a\n    pth: x\n")
    with pytest.raises(ConfigError) as info:
        load_serve_config(path)
    message = str(info.value)
    assert f"{path}:4: adapters.0.pth: unknown key" in message
    assert f"{path}:3: adapters.0.path: required key is missing" in message


def test_paths_resolve_against_the_config_folder_and_names_are_unique(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("base: smollm2-135m-instruct\nstate_dir: st\nadapters:\n  - {name: a, path: ad}\n")
    cfg = load_serve_config(path)
    assert cfg.state_dir == str(tmp_path / "st") and cfg.adapters[0].path == str(tmp_path / "ad")
    path.write_text("base: x\nadapters:\n  - {name: a, path: p}\n  - {name: a, path: q}\n")
    with pytest.raises(ConfigError, match="adapter names must be unique: a"):
        load_serve_config(path)
    path.write_text("base: x\nguardrails:\n  output_regex: '('\n")
    with pytest.raises(ConfigError, match=r":3: guardrails.output_regex: .*not a valid regular expression"):
        load_serve_config(path)


def test_every_field_is_described():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            annotation = field.annotation
            for candidate in getattr(annotation, "__args__", (annotation,)):
                if isinstance(candidate, type) and hasattr(candidate, "model_fields"):
                    walk(candidate)
    walk(ServeConfig)


def test_zero_config_serves_the_run_base_and_its_adapter(tmp_path):
    run = tmp_path / "runs" / "quick"
    tiny_adapter(run / "adapter", 1)
    (run / "manifest.json").write_text(json.dumps({"base_model": {"source": "smollm2-135m-instruct"}}))
    cfg = config_for_run(str(run), tmp_path / "runs", port=0)
    assert cfg.base == "smollm2-135m-instruct" and cfg.port == 0
    assert [(a.name, a.path) for a in cfg.adapters] == [("quick", str((run / "adapter").resolve()))]
    assert cfg.state_dir == str((run / "serve").resolve())


def test_cli_keys_create_list_revoke(tmp_path):
    from typer.testing import CliRunner

    from tuneforge.cli.main import app
    from tuneforge.serve.server import open_store

    config = tmp_path / "serve.yaml"
    config.write_text("base: smollm2-135m-instruct\nstate_dir: state\n")
    runner = CliRunner()
    created = runner.invoke(app, ["serve", "keys", "create", str(config), "--name", "alice", "--models", "a,b",
                                  "--rpm", "5", "--daily-tokens", "1000"])
    assert created.exit_code == 0, created.output
    secret = created.output.strip().splitlines()[-1]
    key = open_store(tmp_path / "state").lookup(secret)
    assert key.name == "alice" and key.models == ("a", "b") and key.rpm == 5 and key.daily_tokens == 1000
    listed = runner.invoke(app, ["serve", "keys", "list", str(config)])
    assert key.id in listed.output and "models=a,b" in listed.output and secret not in listed.output
    assert runner.invoke(app, ["serve", "keys", "revoke", str(config), key.id]).exit_code == 0
    assert open_store(tmp_path / "state").lookup(secret) is None
    again = runner.invoke(app, ["serve", "keys", "revoke", str(config), key.id])
    assert again.exit_code != 0 and "no active key" in again.output
    bad = runner.invoke(app, ["serve", str(tmp_path / "missing-run")])
    assert bad.exit_code != 0 and "Traceback" not in bad.output
