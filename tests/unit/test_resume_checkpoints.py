"""Checkpoint completion markers: resume trusts only checkpoints whose save finished, and says why it skips others."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tuneforge.errors import RunError
from tuneforge.train import checkpoints as ck


def _fake_checkpoint(root: Path, step: int, *, marked: bool = True) -> Path:
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(bytes(range(256)) * (step + 4))
    (folder / "optimizer.pt").write_bytes(b"opt" * (100 + step))
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if marked:
        ck.write_completion_marker(folder, step)
    return folder


def test_newest_marked_checkpoint_is_chosen(tmp_path):
    for step in (2, 4, 6):
        _fake_checkpoint(tmp_path, step)
    point = ck.find_resume_checkpoint(tmp_path)
    assert point.checkpoint.name == "checkpoint-6" and point.step == 6 and point.skipped == []
    marker = json.loads((point.checkpoint / ck.MARKER_NAME).read_text())
    assert marker["step"] == 6
    assert set(marker["files"]) == {"adapter_model.safetensors", "optimizer.pt", "trainer_state.json"}


def test_half_written_checkpoint_without_marker_is_skipped(tmp_path):
    _fake_checkpoint(tmp_path, 2)
    _fake_checkpoint(tmp_path, 4, marked=False)  # killed during the save: files there, no marker
    point = ck.find_resume_checkpoint(tmp_path)
    assert point.checkpoint.name == "checkpoint-2"
    assert [(f.name, "no completion marker" in why) for f, why in point.skipped] == [("checkpoint-4", True)]


def test_truncated_file_and_removed_marker_fall_back_to_previous(tmp_path):
    _fake_checkpoint(tmp_path, 2)
    newest = _fake_checkpoint(tmp_path, 4)
    weights = newest / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated, marker still there
    point = ck.find_resume_checkpoint(tmp_path)
    assert point.checkpoint.name == "checkpoint-2"
    assert "adapter_model.safetensors has 100 bytes" in point.skipped[0][1]

    (newest / ck.MARKER_NAME).unlink()
    assert ck.find_resume_checkpoint(tmp_path).checkpoint.name == "checkpoint-2"


def test_same_size_corruption_is_caught_by_hash(tmp_path):
    _fake_checkpoint(tmp_path, 2)
    newest = _fake_checkpoint(tmp_path, 4)
    optimizer = newest / "optimizer.pt"
    optimizer.write_bytes(b"X" * optimizer.stat().st_size)
    point = ck.find_resume_checkpoint(tmp_path)
    assert point.checkpoint.name == "checkpoint-2" and "sha256" in point.skipped[0][1]


def test_missing_file_and_garbage_marker(tmp_path):
    first = _fake_checkpoint(tmp_path, 2)
    (first / "optimizer.pt").unlink()
    second = _fake_checkpoint(tmp_path, 4)
    (second / ck.MARKER_NAME).write_text("{not json")
    point = ck.find_resume_checkpoint(tmp_path)
    assert point.checkpoint is None and point.step == 0
    reasons = dict((f.name, why) for f, why in point.skipped)
    assert "optimizer.pt is missing" in reasons["checkpoint-2"]
    assert "unreadable completion marker" in reasons["checkpoint-4"]


def test_untrusted_checkpoints_are_set_aside_out_of_the_trainers_glob(tmp_path):
    _fake_checkpoint(tmp_path, 2)
    _fake_checkpoint(tmp_path, 4, marked=False)
    point = ck.find_resume_checkpoint(tmp_path)
    moved = ck.set_aside_untrusted(point)
    assert [p.name for p in moved] == ["untrusted-checkpoint-4"]
    # The Trainer rotates and resumes over `checkpoint-*`; the untrusted folder must not match it.
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2"]


def test_marker_callback_writes_only_on_rank_zero(tmp_path):
    folder = _fake_checkpoint(tmp_path, 3, marked=False)
    callback = ck.CheckpointMarkerCallback(tmp_path)
    callback.on_save(None, SimpleNamespace(global_step=3, is_world_process_zero=False), None)
    assert not (folder / ck.MARKER_NAME).exists()
    callback.on_save(None, SimpleNamespace(global_step=3, is_world_process_zero=True), None)
    assert ck.verify_checkpoint(folder) is None


def test_truncate_metrics_drops_records_after_the_checkpoint_and_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in (1, 2, 3, 4)]
    path.write_text("\n".join(lines) + '\n{"step": 5, "lo')  # the kill cut the last line short
    assert ck.truncate_metrics(path, 2) == 3
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


def test_find_run_to_resume(tmp_path):
    for name in ("cfg-20260101-120000", "cfg-20260102-120000", "cfg-x-20260103-120000", "other-20260104-120000"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text("{}")
    assert ck.find_run_to_resume(tmp_path, None, "cfg").name == "cfg-20260102-120000"
    assert ck.find_run_to_resume(tmp_path, "other-20260104-120000", "cfg").name == "other-20260104-120000"
    with pytest.raises(RunError, match="no earlier run"):
        ck.find_run_to_resume(tmp_path, None, "nothing")
    with pytest.raises(RunError, match="no run directory"):
        ck.find_run_to_resume(tmp_path, "missing", "cfg")


def test_resume_refuses_a_changed_config(tmp_path):
    stored = "training:\n  batch_size: 8\n  seed: 1\noutput:\n  name: a\n"
    ck.check_same_config(stored, {"training": {"batch_size": 8, "seed": 1}, "output": {"name": "b"}}, tmp_path)
    with pytest.raises(RunError, match=r"training\.batch_size"):
        ck.check_same_config(stored, {"training": {"batch_size": 4, "seed": 1}}, tmp_path)


def test_set_aside_checkpoints_are_removed_once_a_trusted_one_supersedes_them(tmp_path):
    from rich.console import Console

    for step in (4, 6):
        _fake_checkpoint(tmp_path, step, marked=False)
        ck.set_aside_untrusted(ck.find_resume_checkpoint(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["untrusted-checkpoint-4", "untrusted-checkpoint-6"]
    console = Console(record=True, width=200)
    callback = ck.CheckpointMarkerCallback(tmp_path, console=console)

    _fake_checkpoint(tmp_path, 4, marked=False)  # the resumed run saves step 4 again, completely this time
    callback.on_save(None, SimpleNamespace(global_step=4, is_world_process_zero=True), None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4", "untrusted-checkpoint-6"]
    assert "removed untrusted-checkpoint-4: superseded by trusted checkpoint-4" in console.export_text()

    _fake_checkpoint(tmp_path, 8, marked=False)
    callback.on_save(None, SimpleNamespace(global_step=8, is_world_process_zero=True), None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4", "checkpoint-8"]
    assert "removed untrusted-checkpoint-6: superseded by trusted checkpoint-8" in console.export_text()
