#!/usr/bin/env python3
"""Set up tuneforge's virtual environment (if needed) and run a task in it.

    python3 dev.py quickstart [OPTIONS]   # fine-tune, evaluate and export the bundled SmolLM2 on the bundled task
    python3 dev.py test [PYTEST ARGS]     # the whole test suite (what .ci/run calls)
    python3 dev.py tuneforge ARGS...      # any tuneforge command inside the environment
    python3 dev.py setup                  # only create/refresh .venv

Only a Python >= 3.11 is needed: everything else is installed into ./.venv from the pinned
constraints.txt. torch is installed first and on its own so that the pinned 2.13.0 build is the
one used (on a CPU-only machine this resolves to the local CPU wheel, never a CUDA download).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".tuneforge-setup"


def _setup_fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt", "dev.py"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def _pip(*args: str) -> None:
    cmd = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def ensure_env() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"tuneforge needs Python >= 3.11; this is {sys.version.split()[0]}")
    fingerprint = _setup_fingerprint()
    if PY.exists() and STAMP.exists() and STAMP.read_text() == fingerprint:
        return
    if not PY.exists():
        print(f"Creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    torch_pin = next(
        line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines() if line.startswith("torch==")
    )
    _pip(torch_pin)
    _pip("-c", str(ROOT / "constraints.txt"), "-e", f"{ROOT}[dev]")
    STAMP.write_text(fingerprint)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0
    task, rest = argv[0], argv[1:]
    ensure_env()
    env = dict(os.environ)
    if task == "setup":
        return 0
    if task == "test":
        cmd = [str(PY), "-m", "pytest", *rest]
    elif task == "quickstart":
        cmd = [str(BIN / "tuneforge"), "quickstart", *rest]
    elif task == "tuneforge":
        cmd = [str(BIN / "tuneforge"), *rest]
    else:
        print(f"unknown task {task!r}; expected one of: quickstart, test, tuneforge, setup", file=sys.stderr)
        return 2
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
