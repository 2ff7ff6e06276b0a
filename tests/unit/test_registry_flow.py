"""The registry on a real (tiny) training run: register, dedup by content, gated promotion, rollback, history,
deprecation, lineage hashes, change log, dossier, and `registry:` references in `tuneforge eval`."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import sqlite3

import pytest

from tests.registry_helpers import invoke, set_scores, train_tiny_run, variant
from tuneforge.registry import (
    PromotionRefused,
    RegistryError,
    Store,
    promote,
    register,
    resolve,
    rollback,
)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as patch:
        report_to = []
        if HAS_MLFLOW:  # the same run also proves training.report_to reaches MLflow (a local file store)
            report_to = ["mlflow"]
            patch.setenv("MLFLOW_TRACKING_URI", (root / "mlruns").as_uri())
            patch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
            patch.setenv("MLFLOW_EXPERIMENT_NAME", "tiny-train")
        run = train_tiny_run(root, report_to=report_to)
    n = len(json.loads((run / "eval" / "results.json").read_text())["items"])
    # v1 scores 2 of n fields right; v2 (other weights) n-1 of n; v3 (other weights, other config) 1 of n
    set_scores(run, {"json_fields": [1.0, 1.0] + [0.0] * (n - 2)})
    good = variant(run, "tiny-good", seed=1, scores={"json_fields": [1.0] * (n - 1) + [0.0]},
                   config_edit=("learning_rate: 0.001", "learning_rate: 0.002"))
    bad = variant(run, "tiny-bad", seed=2, scores={"json_fields": [1.0] + [0.0] * (n - 1)})
    gates = root / "gates.yaml"
    gates.write_text("gates:\n  - \"json_fields >= 0.5\"\n")
    return {"root": root, "runs": root / "runs", "run": run, "good": good, "bad": bad, "gates": gates, "n": n}


@pytest.fixture()
def store(tmp_path):
    with Store(tmp_path / "registry.db") as opened:
        yield opened


def test_same_content_twice_is_one_version(trained, store, tmp_path):
    v1, created = register(store, trained["run"], "contacts", runs_dir=trained["runs"], note="first cut")
    again, created_again = register(store, trained["run"], "contacts", runs_dir=trained["runs"])
    assert created and not created_again and (v1.version, again.version) == (1, 1)
    # a byte-identical copy of the run in another folder is still the same content
    copy = tmp_path / "copy-of-tiny"
    import shutil

    shutil.copytree(trained["run"], copy)
    assert register(store, copy, "contacts", runs_dir=trained["runs"])[0].version == 1
    v2, created = register(store, trained["good"], "contacts", runs_dir=trained["runs"])
    assert created and v2.version == 2 and v2.content_hash != v1.content_hash
    assert [e.action for e in store.events("contacts")] == ["register", "register"]
    assert v1.kind == "adapter" and v1.note == "first cut" and v1.registered_by


def test_lineage_resolves_to_the_files_real_sha256(trained, store):
    version, _ = register(store, trained["run"], "contacts", runs_dir=trained["runs"])
    root, run = trained["root"], trained["run"]
    lineage = version.lineage
    for split, name in (("train", "train.jsonl"), ("validation", "validation.jsonl"), ("test", "test.jsonl")):
        assert lineage["datasets"][split]["sha256"] == sha256(root / name)
    assert lineage["config_sha256"] == sha256(run / "config.yaml")
    assert lineage["results_sha256"] == sha256(run / "eval" / "results.json")
    assert version.base["weights_sha256"] == sha256(root / "tiny-model" / "model.safetensors")
    assert version.artifacts["files"]["adapter_model.safetensors"] == sha256(run / "adapter" /
                                                                             "adapter_model.safetensors")
    manifest = json.loads((run / "manifest.json").read_text())
    assert lineage["code"] == manifest["git"]
    assert version.results["models"]["tuned"]["summary"]["json_fields"] == pytest.approx(2 / trained["n"])
    result = invoke("registry", "verify", "contacts", "1", "--db", store.path)
    assert result.exit_code == 0, result.output
    assert "every registered file matches" in result.output


def test_promote_blocked_by_a_failing_gate_and_recorded(trained, store):
    register(store, trained["good"], "contacts", runs_dir=trained["runs"])          # v1 passes (n-1 of n)
    register(store, trained["bad"], "contacts", runs_dir=trained["runs"])           # v2 fails (1 of n)
    moved = promote(store, "contacts", "1", "production", gates_file=trained["gates"], reason="launch")
    assert moved.moved and moved.from_version is None and moved.gates[0]["passed"]
    with pytest.raises(PromotionRefused, match="json_fields") as refused:
        promote(store, "contacts", "v2", "production", gates_file=trained["gates"])
    assert refused.value.exit_code == 1
    assert store.alias_target("contacts", "production") == 1
    last = store.events("contacts", "production")[-1]
    assert (last.action, last.from_version, last.to_version) == ("refused", 1, 2)
    assert "1 of 1 gate(s) failed" in last.reason and last.gates[0]["passed"] is False

    # through the CLI: exit 1, the reason printed, the alias unchanged
    result = invoke("registry", "promote", "contacts", "2", "--to", "production", "--gates", trained["gates"],
                    "--db", store.path)
    assert result.exit_code == 1 and "FAIL" in result.output and "production stays on v1" in result.output
    assert store.alias_target("contacts", "production") == 1


def test_rollback_restores_previous_target_and_history_is_complete(trained, store):
    for run in ("run", "good", "bad"):
        register(store, trained[run], "contacts", runs_dir=trained["runs"])
    promote(store, "contacts", 1, "production")
    promote(store, "contacts", 2, "production")
    promote(store, "contacts", 3, "production")
    assert rollback(store, "contacts", "production").to_version == 2
    assert resolve(store, "contacts", "production").version == 2
    assert rollback(store, "contacts", "production").to_version == 1
    with pytest.raises(RegistryError, match="no earlier target"):
        rollback(store, "contacts", "production")
    promote(store, "contacts", 3, "staging")
    moves = [(e.action, e.alias, e.from_version, e.to_version) for e in store.events("contacts")
             if e.action != "register"]
    assert moves == [("promote", "production", None, 1), ("promote", "production", 1, 2),
                     ("promote", "production", 2, 3), ("rollback", "production", 3, 2),
                     ("rollback", "production", 2, 1), ("promote", "staging", None, 3)]
    assert store.aliases("contacts") == {"production": 1, "staging": 3}
    history = invoke("registry", "history", "contacts", "--json", "--db", store.path)
    assert history.exit_code == 0
    assert [e["action"] for e in json.loads(history.output)] == ["register"] * 3 + [m[0] for m in moves]


def test_deprecated_version_cannot_be_promoted_but_keeps_lineage(trained, store):
    register(store, trained["run"], "contacts", runs_dir=trained["runs"])
    result = invoke("registry", "deprecate", "contacts", "1", "--reason", "leaked test data", "--db", store.path)
    assert result.exit_code == 0, result.output
    with pytest.raises(PromotionRefused, match="deprecated"):
        promote(store, "contacts", 1, "production")
    version = store.version("contacts", 1)
    assert version.deprecated_reason == "leaked test data" and version.lineage["datasets"]["train"]["sha256"]
    assert store.alias_target("contacts", "production") is None


def test_registry_ref_resolves_and_follows_alias_moves(trained, store):
    from tuneforge.models.ref import parse_model_ref
    from tuneforge.registry.release import resolve_model_ref

    register(store, trained["run"], "contacts", runs_dir=trained["runs"])
    register(store, trained["good"], "contacts", runs_dir=trained["runs"])
    promote(store, "contacts", 1, "production")
    ref = parse_model_ref("registry:contacts@production")
    first = resolve_model_ref(ref, db=store.path)
    assert first.kind == "run" and first.adapter_path == str((trained["run"] / "adapter").resolve())
    assert first.base.path == str((trained["root"] / "tiny-model").resolve()) and first.version == "1"
    promote(store, "contacts", 2, "production")
    assert resolve_model_ref(ref, db=store.path).adapter_path == str((trained["good"] / "adapter").resolve())
    assert resolve(store.path, "contacts", "v1").model_ref.adapter_path == first.adapter_path
    with pytest.raises(RegistryError, match="no alias 'canary'"):
        resolve(store.path, "contacts", "canary")


def test_eval_accepts_registry_refs(trained, tmp_path, monkeypatch):
    db = tmp_path / "cli.db"
    monkeypatch.setenv("TUNEFORGE_REGISTRY", str(db))
    out = invoke("registry", "register", trained["run"], "--name", "contacts", "--runs-dir", trained["runs"])
    assert out.exit_code == 0 and "registered contacts v1" in out.output, out.output
    assert invoke("registry", "promote", "contacts", "1", "--to", "production").exit_code == 0
    result = invoke("eval", "registry:contacts@production", "--data", trained["root"] / "test.jsonl",
                    "--max-new-tokens", "4", "--max-items", "2", "--out", tmp_path / "ev", "--no-report")
    assert result.exit_code == 0, result.output + repr(result.exception)
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert results["sources"]["tuned"] == "registry:contacts@production" and results["n_items"] == 2
    assert results["sources"]["tuned_resolved"] == str(trained["run"])  # ... and the version it named then
    assert "base" in results["models"]  # an adapter version is compared with its registered base
    unknown = invoke("eval", "registry:contacts@canary", "--data", trained["root"] / "test.jsonl")
    assert unknown.exit_code == 1 and "no alias 'canary'" in unknown.output


def test_changelog_has_paired_ci_gates_and_changes(trained, store, tmp_path):
    register(store, trained["run"], "contacts", runs_dir=trained["runs"])
    register(store, trained["good"], "contacts", runs_dir=trained["runs"])
    promote(store, "contacts", 1, "production")
    promote(store, "contacts", 2, "production", gates_file=trained["gates"])
    out = tmp_path / "CHANGELOG.md"
    result = invoke("registry", "changelog", "contacts", "--out", out, "--db", store.path)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    from tuneforge.eval.bootstrap import paired_bootstrap

    n = trained["n"]
    expected = paired_bootstrap([1.0, 1.0] + [0.0] * (n - 2), [1.0] * (n - 1) + [0.0], n_resamples=2000, seed=0)
    row = next(line for line in text.splitlines() if line.startswith("| json_fields |"))
    assert f"{expected.delta:+.4f}" in row and f"[{expected.ci_low:+.4f}, {expected.ci_high:+.4f}]" in row
    assert f"| {n} |" in row
    assert "### Against v1 (production before v2 was promoted)" in text
    assert "pass `2: json_fields >= 0.5`" in text and "- (no per-item scores)" in text
    assert "config `training.learning_rate`: 0.001 -> 0.002" in text


def test_dossier_bundle(trained, store, tmp_path):
    register(store, trained["run"], "contacts", runs_dir=trained["runs"])
    register(store, trained["good"], "contacts", runs_dir=trained["runs"])
    promote(store, "contacts", 1, "production")
    promote(store, "contacts", 2, "production", gates_file=trained["gates"])
    out = tmp_path / "dossier"
    result = invoke("registry", "dossier", "contacts", "production", "--out", out, "--db", store.path)
    assert result.exit_code == 0, result.output
    index = json.loads((out / "dossier.json").read_text())
    assert index["version"] == 2 and index["replaces"] == 1
    for name, digest in index["files"].items():
        assert sha256(out / name) == digest
    assert {"model_card.md", "config.yaml", "lineage.json", "eval/results.json", "eval/gates.json",
            "resources.json", "licenses.json", "rollback.md"} <= set(index["files"])
    assert (out / "config.yaml").read_text() == (trained["good"] / "config.yaml").read_text()
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["datasets"]["train"]["sha256"] == sha256(trained["root"] / "train.jsonl")
    assert "v1" in (out / "rollback.md").read_text() and "rollback contacts --alias production" in \
        (out / "rollback.md").read_text()
    assert json.loads((out / "licenses.json").read_text())["base_model"]["license"] == "unknown"
    resources = json.loads((out / "resources.json").read_text())
    assert resources["steps"] == 2 and resources["timings"]["train_s"] >= 0
    gates = json.loads((out / "eval" / "gates.json").read_text())
    assert gates[0]["action"] == "promote" and gates[0]["gates"][0]["passed"]


def test_cli_errors_are_clear(trained, tmp_path):
    missing = invoke("registry", "ls", "--db", tmp_path / "nope.db")
    assert missing.exit_code == 1 and "no registry database" in missing.output
    bad_name = invoke("registry", "register", trained["run"], "--name", "bad name", "--db", tmp_path / "r.db")
    assert bad_name.exit_code == 2 and "model name 'bad name'" in bad_name.output
    not_db = tmp_path / "junk.db"
    not_db.write_text("not sqlite at all " * 100)
    junk = invoke("registry", "ls", "--db", not_db)
    assert junk.exit_code == 1 and "not a usable registry database" in junk.output
    assert sqlite3.sqlite_version  # stdlib only


@pytest.mark.skipif(not HAS_MLFLOW, reason="mlflow not installed")
def test_training_metrics_reach_mlflow_through_report_to(trained):
    from mlflow import MlflowClient

    client = MlflowClient((trained["root"] / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("tiny-train")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_name for r in runs] == ["tiny"]
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")] == [1, 2]


@pytest.mark.skipif(not HAS_MLFLOW, reason="mlflow not installed")
def test_export_to_mlflow_runs_versions_and_aliases(trained, store, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    register(store, trained["run"], "contacts", runs_dir=trained["runs"], note="first")
    register(store, trained["good"], "contacts", runs_dir=trained["runs"])
    promote(store, "contacts", 1, "production")
    promote(store, "contacts", 2, "production")
    promote(store, "contacts", 1, "staging")
    uri = (tmp_path / "mlflow").as_uri()
    result = invoke("registry", "export-mlflow", "contacts", "--tracking-uri", uri, "--db", store.path)
    assert result.exit_code == 0, result.output + repr(result.exception)

    client = MlflowClient(uri, registry_uri=uri)
    production = client.get_model_version_by_alias("contacts", "production")
    staging = client.get_model_version_by_alias("contacts", "staging")
    assert production.tags["tuneforge.version"] == "2" and staging.tags["tuneforge.version"] == "1"
    assert production.tags["tuneforge.content_hash"] == store.version("contacts", 2).content_hash
    run = client.get_run(production.run_id)
    assert run.data.params["data.train.sha256"] == sha256(trained["root"] / "train.jsonl")
    assert run.data.params["config.training.learning_rate"] == "0.002"
    assert run.data.metrics["json_fields"] == pytest.approx((trained["n"] - 1) / trained["n"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train.loss")] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert "model/adapter_model.safetensors" in artifacts
    # exporting again reuses the runs and model versions
    again = invoke("registry", "export-mlflow", "contacts", "--tracking-uri", uri, "--db", store.path)
    assert again.exit_code == 0 and again.output.count("already exported") == 2
    assert len(client.search_model_versions("name = 'contacts'")) == 2
