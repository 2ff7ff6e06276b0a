"""`tuneforge runs which FILE`: which run, data and code produced a model file found on disk.

A file is identified by its content (sha256), not its name or place: every export records the sha256 of each file it
wrote in the run's manifest (`export_lineage.files`), so a copied or renamed adapter, merged weight file or GGUF is
still traced. A GGUF also carries its run's name in its own metadata (`tuneforge.run`), used when the run is not
under the searched folder any more.
"""
from __future__ import annotations

from pathlib import Path

from tuneforge.errors import RunError


def find_producer(file: Path, runs_dir: Path) -> dict:
    from tuneforge.hashing import sha256_file
    from tuneforge.runs.rundir import list_runs

    file = Path(file)
    if not file.is_file():
        raise RunError(f"{file}: no such file")
    digest = sha256_file(file)
    for row in list_runs(runs_dir):
        manifest = row["manifest"]
        recorded = ((manifest.get("export_lineage") or {}).get("files") or {})
        hits = [path for path, sha in recorded.items() if sha == digest]
        if hits:
            return _answer(file, digest, row["name"], manifest, hits[0], "sha256 recorded in the run's manifest")
    embedded = _gguf_provenance(file)
    if embedded.get("tuneforge.run"):
        return {"file": str(file), "sha256": digest, "run": embedded["tuneforge.run"], "matched_by":
                "GGUF metadata only (no run under the searched folder recorded this exact file)",
                "provenance": embedded}
    raise RunError(f"{file} (sha256 {digest[:16]}...) was not exported by any run under {runs_dir}",
                   hint="pass --runs-dir where the runs live; files are matched by content, so edits break the match")


def _answer(file: Path, digest: str, run: str, manifest: dict, recorded: str, how: str) -> dict:
    lineage = manifest.get("export_lineage") or {}
    return {
        "file": str(file), "sha256": digest, "run": run, "matched_by": how, "recorded_as": recorded,
        "status": manifest.get("status"), "base_model": manifest.get("base_model"),
        "datasets": manifest.get("datasets"), "config_sha256": lineage.get("config_sha256"),
        "code": {"tuneforge_version": manifest.get("tuneforge_version"), "git": manifest.get("git"),
                 "packages": manifest.get("packages")},
        "method": (manifest.get("method") or {}).get("name"), "seed": manifest.get("seed"),
    }


def _gguf_provenance(file: Path) -> dict:
    from tuneforge.integrations.gguf import is_gguf_file

    if not is_gguf_file(file):
        return {}
    from tuneforge.export.gguf import read_metadata

    try:
        return {k: v for k, v in read_metadata(file).items() if k.startswith("tuneforge.")}
    except (ValueError, OSError, KeyError):
        return {}
