"""What a version is made of, on run folders laid out as training writes them (no training here): GGUF files,
what the content hash covers, which runs are refused, names, `ls`/`show`, merged versions as training bases."""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from tests.registry_helpers import fake_run, invoke
from tuneforge.errors import ConfigError, RunError
from tuneforge.registry import Store, promote, register
from tuneforge.registry.content import read_run


def test_gguf_files_in_the_manifest_are_recorded_with_their_sha256(tmp_path):
    run = fake_run(tmp_path, "r", b"w" * 32)
    gguf = run / "export" / "model.Q8_0.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["exports"] = {"gguf": {"q8_0": str(gguf)}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    record = read_run(run, tmp_path / "runs")
    assert record["artifacts"]["gguf"] == [{"path": str(gguf.resolve()),
                                            "sha256": hashlib.sha256(gguf.read_bytes()).hexdigest(), "bytes": 64}]


def test_content_hash_covers_weights_base_and_tokenizer_only(tmp_path):
    runs = tmp_path / "runs"
    first = fake_run(tmp_path, "a", b"w" * 32)
    same_bytes_other_run = fake_run(tmp_path, "b", b"w" * 32, seed=7, started_at="another day")
    other_base = fake_run(tmp_path, "c", b"w" * 32)
    manifest = json.loads((other_base / "manifest.json").read_text())
    manifest["base_model"]["weights_sha256"] = "cd" * 32
    (other_base / "manifest.json").write_text(json.dumps(manifest))
    other_template = fake_run(tmp_path, "d", b"w" * 32)
    (other_template / "adapter" / "chat_template.jinja").write_text("{{ messages }}")
    hashes = [read_run(r, runs)["content_hash"] for r in (first, same_bytes_other_run, other_base, other_template)]
    assert hashes[0] == hashes[1]
    assert len({hashes[0], hashes[2], hashes[3]}) == 3


def test_unfinished_or_empty_runs_are_refused_clearly(tmp_path):
    run = fake_run(tmp_path, "r", b"w" * 32, status="running")
    with pytest.raises(RunError, match="status is 'running'"):
        read_run(run, tmp_path / "runs")
    empty = fake_run(tmp_path, "e", b"w" * 32)
    shutil.rmtree(empty / "adapter")
    with pytest.raises(RunError, match="no adapter or merged model to register"):
        read_run(empty, tmp_path / "runs")
    result = invoke("registry", "register", empty, "--name", "x", "--db", tmp_path / "r.db")
    assert result.exit_code == 1 and "no adapter or merged model" in result.output


def test_alias_names_cannot_look_like_versions(tmp_path):
    with Store(tmp_path / "r.db") as store:
        register(store, fake_run(tmp_path, "r", b"w" * 32), "m", runs_dir=tmp_path / "runs")
        with pytest.raises(ConfigError, match="would read as a version"):
            promote(store, "m", 1, "v2")


def test_ls_and_show(tmp_path):
    db = tmp_path / "r.db"
    for k in range(2):
        out = invoke("registry", "register", fake_run(tmp_path, f"r{k}", bytes([k]) * 32), "--name", "contacts",
                     "--note", f"cut {k}", "--db", db)
        assert out.exit_code == 0, out.output
    assert invoke("registry", "promote", "contacts", "2", "--to", "production", "--db", db).exit_code == 0
    listing = invoke("registry", "ls", "--db", db)
    assert listing.exit_code == 0 and "contacts" in listing.output and "production -> v2" in listing.output
    shown = invoke("registry", "show", "contacts", "production", "--json", "--db", db)
    record = json.loads(shown.output)
    assert record["version"] == 2 and record["note"] == "cut 1" and record["lineage"]["run"] == "r1"


def test_a_merged_version_is_a_training_base(tmp_path, monkeypatch):
    from tuneforge.recipes.finetune import base_model_ref

    run = fake_run(tmp_path, "r", b"w" * 32)
    (run / "merged").mkdir()
    (run / "merged" / "config.json").write_text("{}")
    (run / "merged" / "model.safetensors").write_bytes(b"m" * 32)
    monkeypatch.setenv("TUNEFORGE_REGISTRY", str(tmp_path / "r.db"))
    with Store(tmp_path / "r.db") as store:
        register(store, run, "contacts", runs_dir=tmp_path / "runs", kind="merged")
        register(store, run, "adapters", runs_dir=tmp_path / "runs")
    ref = base_model_ref("registry:contacts@1", tmp_path / "runs")
    assert ref.kind == "run" and ref.path == str((run / "merged").resolve())
    with pytest.raises(ConfigError, match="training needs full weights"):
        base_model_ref("registry:adapters@v1", tmp_path / "runs")


def test_poll_api_notices_moves(tmp_path):
    from tuneforge.registry import alias_state, resolve

    db = tmp_path / "r.db"
    with Store(db) as store:
        for k in range(2):
            register(store, fake_run(tmp_path, f"r{k}", bytes([k]) * 32), "m", runs_dir=tmp_path / "runs")
        promote(store, "m", 1, "production")
        seen, aliases = alias_state(db, "m")
        assert aliases == {"production": 1} and resolve(db, "m", "production").event_id == seen
        assert alias_state(db, "m")[0] == seen  # nothing moved, same id
        promote(store, "m", 2, "production")
        now, aliases = alias_state(db, "m")
        assert now > seen and aliases == {"production": 2}
        assert [(e.action, e.to_version) for e in store.events("m", since=seen)] == [("promote", 2)]
