"""The one way tuneforge writes files and folders: atomically, durably, readable by others.

A reader (a user, a server, a second process, the next run after a crash) sees either the previous content or the
complete new one, never half a file or half a model folder:

- files are written to a temp file in the same folder, flushed and fsync'ed, then renamed over the target (a
  rename within one file system is atomic); the temp file is removed if anything fails on the way;
- folders are filled under a temp name next to the target and renamed into place when complete.

Permissions: `tempfile` creates owner-only files and folders (0600/0700) on purpose; a model, a report or a run
folder is not secret, and a service user must be able to load what training wrote. Everything written here gets
the modes a plain `open()`/`mkdir()` would give under the process umask (0644/0755 under the usual 022).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back (a few instructions, no file is created between).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_modes() -> tuple[int, int]:
    """(file mode, folder mode) that open()/mkdir() would give under the current umask."""
    mask = _umask()
    return 0o666 & ~mask, 0o777 & ~mask


def make_shareable(path: Path) -> None:
    """Give `path` (and, for a folder, everything under it) the umask's default modes instead of tempfile's
    0600/0700."""
    file_mode, dir_mode = default_modes()
    path = Path(path)
    if path.is_dir():
        path.chmod(dir_mode)
        for child in path.rglob("*"):
            if not child.is_symlink():
                child.chmod(dir_mode if child.is_dir() else file_mode)
    else:
        path.chmod(file_mode)


def write_chunks_atomic(path: Path, chunks: Iterable[bytes]) -> str:
    """Stream byte chunks into `path` atomically (through `atomic_path`); returns the content's sha256."""
    digest = hashlib.sha256()
    # The file is closed (inner context) before atomic_path fsyncs and renames it (outer context).
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        for chunk in chunks:
            digest.update(chunk)
            handle.write(chunk)
    return digest.hexdigest()


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    write_chunks_atomic(path, [data])
    return Path(path)


def write_text_atomic(path: Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, payload) -> Path:
    return write_text_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def leftover_prefix(final: Path) -> str:
    """Name prefix of `atomic_dir`'s temp folders for `final` (a killed writer leaves one behind)."""
    return f".{Path(final).name}.tmp-"


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temp folder next to `final`; on success it replaces `final` whole, on failure it is deleted.

    A previous `final` is moved aside before the rename and deleted after it, so `final` is missing only for the
    instant between two renames and never holds a mix of old and new files.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=leftover_prefix(final), dir=final.parent))
    try:
        yield tmp
        make_shareable(tmp)
        stale = None
        if final.exists():
            stale = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.replace(final, stale / final.name)
        os.replace(tmp, final)
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(final.parent)


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temp file path next to `final` for writers that need a path (GGUF); on success it is renamed over
    `final`, on failure (the writer's or a check's exception) it is deleted, so no half-checked file is ever left."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        make_shareable(tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(final.parent)
