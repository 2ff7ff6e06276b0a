"""The run directory: where every artifact of one run lives, and the lineage manifest that ties them together.

    runs/<name>/config.yaml  manifest.json  metrics.jsonl  heartbeat.json  checkpoints/  adapter/  merged/  eval/
                report.html

A run that is killed (SIGKILL, OOM killer, power loss) cannot record its own end, so the manifest's `running` is
only believed while the run's process (`pid` on `host`, recorded in the manifest) exists and its heartbeat file
is fresh; `effective_status` reads a run that fails either test as `interrupted`.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Self

from tuneforge import __version__
from tuneforge.atomic import write_json_atomic
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
    heartbeat = property(lambda self: self.path / "heartbeat.json")

    def read_manifest(self) -> dict:
        if not self.manifest.is_file():
            return {}
        return json.loads(self.manifest.read_text())

    def update_manifest(self, **fields) -> dict:
        manifest = self.read_manifest()
        manifest.update(fields)
        write_json_atomic(self.manifest, manifest)
        return manifest


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


def untrained_leftover(path: Path) -> str | None:
    """Why the run directory at `path` may be replaced by a new run of the same name, or None to keep it.

    Replaceable: a run that ended (failed, or interrupted, including killed) before anything was trained or kept:
    no checkpoint folder (trusted or set aside), no metrics record, no export. Such a directory holds only the
    record of a false start (a wrong model path, unreadable data), and must not block the corrected rerun.
    """
    run = RunDir(Path(path))
    try:
        manifest = run.read_manifest()
    except (OSError, ValueError):
        return None
    status, _ = effective_status(run, manifest)
    if status not in ("failed", "interrupted") or run.adapter.exists() or run.merged.exists():
        return None
    if run.checkpoints.is_dir() and any(run.checkpoints.iterdir()):
        return None
    if run.metrics.is_file() and run.metrics.read_text().strip():
        return None
    error = str(manifest.get("error") or "").split("\n")[0]  # the message, not its hint
    return f"its earlier attempt {status} before training" + (f" ({error})" if error else "")


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
        **process_identity(),
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
        status, reason = effective_status(run, manifest)
        rows.append({"name": run.name, "path": str(path), "manifest": manifest, "results": results,
                     "status": status, "status_reason": reason})
    return rows


# A live run rewrites heartbeat.json every HEARTBEAT_INTERVAL_S from a background thread, whatever the training is
# doing (loading, a long step, evaluation); STALE is generous so a busy or briefly suspended machine is not misread.
HEARTBEAT_INTERVAL_S = 30.0
HEARTBEAT_STALE_S = 600.0


def process_identity() -> dict:
    """The manifest fields that let a reader tell whether the run's process still exists."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


class Heartbeat:
    """Rewrites the run's heartbeat.json every `interval_s` seconds until stopped (a context manager)."""

    def __init__(self, run: RunDir, interval_s: float = HEARTBEAT_INTERVAL_S):
        self.run = run
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        try:
            write_json_atomic(self.run.heartbeat, {**process_identity(), "at": time.time(), "at_iso": now_iso()})
        except OSError:
            pass  # a full disk or a removed run dir must not kill the training; staleness will tell

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()

    def start(self) -> Self:
        self.beat()
        self._thread = threading.Thread(target=self._loop, name="tuneforge-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def pid_alive(pid: int) -> bool:
    """Whether `pid` names a live process on this machine (a zombie, killed but not yet reaped, is dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): the signal test is all we have
    return state != "Z"


def effective_status(run: RunDir, manifest: dict | None = None, *, now: float | None = None) -> tuple[str, str | None]:
    """The run's status as it really is, and why it differs from the manifest's (None when it does not).

    `running` is kept only while the recorded process exists (checked when it ran on this host) and its heartbeat
    is fresh; runs from before pid/heartbeat were recorded carry neither and stay as recorded.
    """
    manifest = run.read_manifest() if manifest is None else manifest
    status = manifest.get("status", "?")
    if status != "running":
        return status, None
    pid, host = manifest.get("pid"), manifest.get("host")
    if isinstance(pid, int) and host == socket.gethostname() and not pid_alive(pid):
        return "interrupted", f"process {pid} on {host} is no longer running"
    try:
        beat = json.loads(run.heartbeat.read_text())
        age = (time.time() if now is None else now) - float(beat["at"])
    except (OSError, ValueError, KeyError, TypeError):
        return status, None
    if age > HEARTBEAT_STALE_S:
        return "interrupted", f"no heartbeat for {age / 60:.0f} min (process {pid} on {host})"
    return status, None
