"""Trustworthy checkpoints and `tuneforge train CONFIG --resume`.

The HF Trainer writes `checkpoints/checkpoint-N/` in place, file after file (weights, optimizer, scheduler,
RNG states, trainer_state.json). A process killed half-way through leaves a folder that looks like a
checkpoint but is not one. So, once every file of a save is on disk, `CheckpointMarkerCallback` writes
`checkpoint-N/tuneforge-complete.json` (atomically, via rename) listing every file with its size and sha256.
Resume trusts only the newest checkpoint whose marker exists and whose files still match it; anything
newer is moved aside (renamed `untrusted-checkpoint-N`, which the Trainer's `checkpoint-*` rotation ignores)
with a printed note, so a re-save of step N later cannot mix old and new files. Once a trusted checkpoint of
step N or later is written, `untrusted-checkpoint-N` has nothing left to offer and is deleted (with a note).

What a resumed run restores (all from the checkpoint, by the Trainer): model/adapter weights, optimizer and
LR-scheduler state, python/numpy/torch RNG states (dropout), the global step, and the data order (the
seeded sampler is replayed and the batches already seen in the current epoch are skipped).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainerCallback

from tuneforge.errors import RunError
from tuneforge.hashing import sha256_file

MARKER_NAME = "tuneforge-complete.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def _checkpoint_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MARKER_NAME
                  and not p.name.startswith(f".{MARKER_NAME}"))


def write_completion_marker(folder: Path, step: int) -> Path:
    """Record every file of a finished save; the marker's presence is what makes a checkpoint trusted."""
    from tuneforge.atomic import write_json_atomic

    files = {}
    for path in _checkpoint_files(folder):
        # The Trainer does not fsync; without this a power loss (not a kill) could lose data the marker vouches for.
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        files[str(path.relative_to(folder))] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    marker = folder / MARKER_NAME
    write_json_atomic(marker, {"step": step, "files": files})
    return marker


def verify_checkpoint(folder: Path) -> str | None:
    """None when `folder` is a complete checkpoint; otherwise why it must not be trusted."""
    marker = folder / MARKER_NAME
    if not marker.is_file():
        return "no completion marker (the save was interrupted or never finished)"
    try:
        recorded = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return f"unreadable completion marker {marker.name}"
    if not recorded:
        return "completion marker lists no files"
    for name, expected in recorded.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, the marker recorded {expected['bytes']}"
        if sha256_file(path) != expected["sha256"]:
            return f"{name} does not match its recorded sha256"
    return None


def checkpoint_step(folder: Path) -> int | None:
    match = _CHECKPOINT_RE.match(folder.name)
    return int(match.group(1)) if match else None


@dataclass
class ResumePoint:
    checkpoint: Path | None                          # newest trusted checkpoint, None: start from step 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # newer folders not trusted, with the reason

    @property
    def step(self) -> int:
        return checkpoint_step(self.checkpoint) if self.checkpoint else 0


def find_resume_checkpoint(checkpoints_dir: Path) -> ResumePoint:
    """The newest checkpoint with a valid completion marker, and the newer ones passed over (and why)."""
    point = ResumePoint(None)
    if not checkpoints_dir.is_dir():
        return point
    folders = [p for p in checkpoints_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    for folder in sorted(folders, key=checkpoint_step, reverse=True):
        problem = verify_checkpoint(folder)
        if problem is None:
            point.checkpoint = folder
            return point
        point.skipped.append((folder, problem))
    return point


def set_aside_untrusted(point: ResumePoint) -> list[Path]:
    """Rename untrusted checkpoint folders so neither resume nor the Trainer's rotation ever reads them."""
    moved = []
    for folder, _reason in point.skipped:
        target = folder.with_name(f"untrusted-{folder.name}")
        if target.exists():
            import shutil

            shutil.rmtree(target)
        folder.rename(target)
        moved.append(target)
    return moved


def remove_superseded_untrusted(checkpoints_dir: Path, step: int) -> list[Path]:
    """Delete set-aside `untrusted-checkpoint-M` folders with M <= `step`, a trusted checkpoint's step.

    They are kept until then for inspection (what did the interrupted save write?); after it, training has
    passed that step again with a complete save and they are dead weight (a full fine-tune's are model-sized).
    """
    import shutil

    removed = []
    for folder in sorted(Path(checkpoints_dir).glob("untrusted-checkpoint-*")):
        untrusted_step = checkpoint_step(folder.with_name(folder.name.removeprefix("untrusted-")))
        if folder.is_dir() and untrusted_step is not None and untrusted_step <= step:
            shutil.rmtree(folder)
            removed.append(folder)
    return removed


def truncate_metrics(metrics_path: Path, last_step: int) -> int:
    """Drop metrics.jsonl records logged after `last_step`: the resumed run logs those steps again.

    Returns how many records were dropped.
    """
    from tuneforge.atomic import write_text_atomic

    if not metrics_path.is_file():
        return 0
    kept, dropped = [], 0
    for line in metrics_path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            step = json.loads(line).get("step", 0)
        except ValueError:  # a line cut short by the kill
            dropped += 1
            continue
        if step <= last_step:
            kept.append(line)
        else:
            dropped += 1
    write_text_atomic(metrics_path, "".join(f"{line}\n" for line in kept))
    return dropped


class CheckpointMarkerCallback(TrainerCallback):
    """Writes the completion marker after the Trainer has finished every file of checkpoint-N.

    `on_save` runs after `_save_checkpoint` returns on every rank; under DDP the other ranks still write their own
    `rng_state_<rank>.pth`, so all ranks meet at a barrier first and only rank 0 writes the marker.
    """

    def __init__(self, checkpoints_dir: Path, console=None):
        from tuneforge.console import make_console

        self.checkpoints_dir = Path(checkpoints_dir)
        self.console = console or make_console()

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        if state.is_world_process_zero:
            folder = self.checkpoints_dir / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                write_completion_marker(folder, state.global_step)
                for removed in remove_superseded_untrusted(self.checkpoints_dir, state.global_step):
                    self.console.print(f"[yellow]note:[/] removed {removed.name}: superseded by trusted "
                                       f"{folder.name}", highlight=False)


def find_run_to_resume(parent: str | Path, name: str | None, config_stem: str) -> Path:
    """The run directory `--resume` continues: `output.name` when set, else the newest `<config stem>-<time>` run."""
    parent = Path(parent)
    if name:
        path = parent / name
        if not (path / "config.yaml").is_file():
            raise RunError(f"--resume: no run directory {path} with a config.yaml to resume",
                           hint="drop --resume to start a new run, or set output.name to the run to continue")
        return path
    pattern = re.compile(rf"^{re.escape(config_stem)}-\d{{8}}-\d{{6}}$")
    candidates = sorted(p for p in parent.glob(f"{config_stem}-*") if pattern.match(p.name)
                        and (p / "config.yaml").is_file()) if parent.is_dir() else []
    if not candidates:
        raise RunError(f"--resume: no earlier run of {config_stem!r} under {parent}",
                       hint="set output.name to the run directory to continue")
    return candidates[-1]  # names end in a sortable timestamp


def check_same_config(stored_yaml: str, current: dict, run_path: Path) -> None:
    """A resumed run must train what it started training; only the output section may differ."""
    import yaml

    stored = yaml.safe_load(stored_yaml) or {}
    changed = sorted(
        f"{section}.{key}"
        for section in set(stored) | set(current) if section != "output"
        for key in set(stored.get(section) or {}) | set(current.get(section) or {})
        if (stored.get(section) or {}).get(key) != (current.get(section) or {}).get(key)
    )
    if changed:
        raise RunError(
            f"--resume: the config differs from the one {run_path.name} was started with ({', '.join(changed)})",
            hint=f"resume with the same config (see {run_path / 'config.yaml'}), or start a new run without --resume",
        )
