"""The run directory: where every artifact of one run lives, and the lineage manifest that ties them together.

    runs/<name>/config.yaml  manifest.json  metrics.jsonl  checkpoints/  adapter/  merged/  eval/  report.html
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from tuneforge import __version__
from tuneforge.errors import RunError

TRACKED_PACKAGES = (
    "torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers",
    "safetensors", "gguf", "bitsandbytes", "numpy", "pydantic",
)


@dataclass
class RunDir:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    config = property(lambda self: self.path / "config.yaml")
    manifest = property(lambda self: self.path / "manifest.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    checkpoints = property(lambda self: self.path / "checkpoints")
    adapter = property(lambda self: self.path / "adapter")
    merged = property(lambda self: self.path / "merged")
    eval_dir = property(lambda self: self.path / "eval")
    report = property(lambda self: self.path / "report.html")

    def read_manifest(self) -> dict:
        if not self.manifest.is_file():
            return {}
        return json.loads(self.manifest.read_text())

    def update_manifest(self, **fields) -> dict:
        manifest = self.read_manifest()
        manifest.update(fields)
        write_json_atomic(self.manifest, manifest)
        return manifest


def write_json_atomic(path: Path, payload) -> None:
    """Write JSON via a temp file + rename so a crash never leaves a half-written file behind."""
    write_text_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def default_run_name(config_path: str | None) -> str:
    stem = Path(config_path).stem if config_path else "run"
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', stem)}-{stamp}"


def create_run_dir(parent: str | Path, name: str, *, overwrite: bool = False) -> RunDir:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in {".", ".."}:
        raise RunError(f"run name {name!r}: use letters, digits, '-', '_' and '.' only")
    path = Path(parent) / name
    if path.exists():
        if not overwrite:
            raise RunError(
                f"run directory {path} already exists",
                hint="pick another output.name, pass output.overwrite=true, or remove the directory",
            )
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return RunDir(path)


def open_run(ref: str | Path, runs_root: str | Path = "runs") -> RunDir:
    """A run by path or by name under `runs_root`."""
    candidates = [Path(ref), Path(runs_root) / str(ref)]
    for candidate in candidates:
        if (candidate / "manifest.json").is_file() or (candidate / "config.yaml").is_file():
            return RunDir(candidate)
    raise RunError(f"no run named {ref!r} (looked in {', '.join(str(c) for c in candidates)})",
                   hint="`tuneforge runs ls` lists the runs")


def package_versions(names=TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of `names`; packages that are not installed are left out."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> dict | None:
    """The commit of the tuneforge source tree, if it is a git checkout (dirty flag included)."""
    src = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def hardware_info() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def base_manifest(run: RunDir, *, seed: int, config_path: str | None) -> dict:
    return {
        "run_name": run.name,
        "tuneforge_version": __version__,
        "git": git_commit(),
        "config_file": config_path,
        "seed": seed,
        "started_at": now_iso(),
        "finished_at": None,
        "status": "running",
        "packages": package_versions(),
        "hardware": hardware_info(),
    }


def list_runs(runs_root: str | Path = "runs") -> list[dict]:
    root = Path(runs_root)
    if not root.is_dir():
        return []
    rows = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        run = RunDir(path)
        manifest = run.read_manifest()
        if not manifest and not run.config.is_file():
            continue
        results = {}
        results_path = run.eval_dir / "results.json"
        if results_path.is_file():
            try:
                results = json.loads(results_path.read_text())
            except json.JSONDecodeError:
                results = {}
        rows.append({"name": run.name, "path": str(path), "manifest": manifest, "results": results})
    return rows
