"""The one atomic writer: whole or nothing, no temp file left behind, modes a service user can read."""
from __future__ import annotations

import os

import pytest

from tuneforge.atomic import atomic_dir, write_json_atomic, write_text_atomic


def test_files_are_replaced_whole_and_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        target = write_text_atomic(tmp_path / "a" / "f.txt", "one")
        write_json_atomic(target, {"two": 2})
        assert target.read_text() == '{\n  "two": 2\n}\n'
        assert target.stat().st_mode & 0o777 == 0o644
        assert [p.name for p in target.parent.iterdir()] == ["f.txt"]
    finally:
        os.umask(old)


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = write_text_atomic(tmp_path / "f.json", "old")

    class Unserialisable:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_json_atomic(target, {"x": Unserialisable()})
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_folders_appear_whole_with_normal_modes_or_not_at_all(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "sub").mkdir()
            (tmp / "sub" / "w.bin").write_bytes(b"x")
            assert not (tmp_path / "model").exists()  # invisible until complete
        model = tmp_path / "model"
        assert model.stat().st_mode & 0o777 == 0o755  # tempfile.mkdtemp alone gives 0700
        assert (model / "sub" / "w.bin").stat().st_mode & 0o777 == 0o644
        with pytest.raises(KeyboardInterrupt), atomic_dir(model) as tmp:
            (tmp / "half").write_text("x")
            raise KeyboardInterrupt
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
        assert (model / "sub" / "w.bin").exists() and not (model / "half").exists()
    finally:
        os.umask(old)
