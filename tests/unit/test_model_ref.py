"""ModelRef: every way a user names a model, parsed in one place."""
from __future__ import annotations

import json

import pytest

from tuneforge.errors import ConfigError, ModelSourceError
from tuneforge.models.ref import parse_model_ref


def _run(tmp_path, name="r1", merged=False, adapter=True, base="smollm2-135m-instruct"):
    run = tmp_path / "runs" / name
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"base_model": {"source": base}}))
    if adapter:
        (run / "adapter").mkdir()
        (run / "adapter" / "adapter_config.json").write_text("{}")
    if merged:
        (run / "merged").mkdir()
        (run / "merged" / "config.json").write_text("{}")
    return run


def test_kinds(tmp_path, tiny_model_dir):
    assert parse_model_ref("smollm2-135m-instruct").kind == "catalog"
    assert parse_model_ref("org/name").kind == "hub"
    folder = parse_model_ref(str(tiny_model_dir))
    assert folder.kind == "folder" and folder.model_path == str(tiny_model_dir.resolve())
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert parse_model_ref(str(gguf)).kind == "gguf"
    endpoint = parse_model_ref("endpoint:tuned", endpoint_url="http://127.0.0.1:8000/v1")
    assert (endpoint.kind, endpoint.name, endpoint.url, endpoint.is_local) == ("endpoint", "tuned",
                                                                              "http://127.0.0.1:8000/v1", False)
    registry = parse_model_ref("registry:contacts@production")
    assert (registry.kind, registry.name, registry.version) == ("registry", "contacts", "production")


def test_runs_by_name_or_path_prefer_the_merged_model(tmp_path):
    run = _run(tmp_path)
    by_name = parse_model_ref("r1", runs_dir=tmp_path / "runs")
    assert by_name.kind == "run" and by_name.adapter_path == str((run / "adapter").resolve())
    assert by_name.base.kind == "catalog" and by_name.adapter_name == "r1"
    merged = _run(tmp_path, "r2", merged=True)
    ref = parse_model_ref(str(merged))
    assert ref.path == str((merged / "merged").resolve()) and ref.adapter_path is None
    assert ref.describe()["base"]["source"] == "smollm2-135m-instruct"


def test_adapter_folder_takes_its_base_from_the_config_or_the_flag(tmp_path, tiny_model_dir):
    adapter = tmp_path / "ad"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model_dir)}))
    ref = parse_model_ref(str(adapter))
    assert ref.kind == "adapter" and ref.base.kind == "folder"
    assert parse_model_ref(str(adapter), adapter_base="smollm2-135m-instruct").base.kind == "catalog"
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="names no base model"):
        parse_model_ref(str(adapter))


@pytest.mark.parametrize(("text", "error", "match"), [
    ("", ConfigError, "no model given"),
    ("endpoint:", ConfigError, "endpoint:MODEL_NAME"),
    ("endpoint:x", ConfigError, "needs the server's URL"),
    ("registry:name", ConfigError, "registry:NAME@ALIAS"),
    ("./nowhere/model", ModelSourceError, "does not exist"),
    ("missing.gguf", ModelSourceError, "does not exist"),
])
def test_bad_references_say_what_to_write(text, error, match):
    with pytest.raises(error, match=match):
        parse_model_ref(text)


def test_run_without_artifacts_is_refused(tmp_path):
    _run(tmp_path, "empty", adapter=False)
    with pytest.raises(ModelSourceError, match="neither a merged model nor an adapter"):
        parse_model_ref("empty", runs_dir=tmp_path / "runs")
