#!/usr/bin/env python3
"""Set up tuneforge's virtual environment (if needed) and run a task in it.

    python3 dev.py quickstart [OPTIONS]   # fine-tune, evaluate and export the bundled SmolLM2 on the bundled task
    python3 dev.py test [PYTEST ARGS]     # the whole test suite (what .ci/run calls)
    python3 dev.py tuneforge ARGS...      # any tuneforge command inside the environment
    python3 dev.py setup                  # only create/refresh .venv

Only a Python >= 3.11 is needed: everything else is installed into ./.venv from the pinned
constraints.txt. torch is installed first and on its own so that the pinned 2.13.0 build is the
one used (on a CPU-only machine this resolves to the local CPU wheel, never a CUDA download).
`quickstart` and `tuneforge` install only the core; `test` and `setup` add the dev extra, whose
llama-cpp-python is built from source once (cmake and a C++ compiler needed), and, as root on Debian,
the postgresql package (apt-get) when no PostgreSQL is installed: the serve tests start a throwaway one.
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
    env = dict(os.environ)
    # llama-cpp-python's multimodal library (mtmd) is not used by tuneforge and is about half of the C++ to compile.
    env.setdefault("CMAKE_ARGS", "-DLLAVA_BUILD=OFF")
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)


def ensure_env(full: bool = True) -> None:
    """Install the pinned stack once. `full` adds the dev extra (test tools, bitsandbytes and llama-cpp-python, which
    builds llama.cpp from source, ~10 min on 2 cores); the quickstart only needs the core and skips that build."""
    if sys.version_info < (3, 11):
        sys.exit(f"tuneforge needs Python >= 3.11; this is {sys.version.split()[0]}")
    fingerprint = _setup_fingerprint()
    stamp = STAMP.read_text().split() if PY.exists() and STAMP.exists() else []
    if stamp[:1] == [fingerprint] and (stamp[1:] == ["full"] or not full):
        return
    if not PY.exists():
        print(f"Creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    torch_pin = next(
        line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines() if line.startswith("torch==")
    )
    _pip(torch_pin)
    if full:
        print("Installing the dev extra; llama-cpp-python compiles llama.cpp once (about 10 minutes)", flush=True)
    _pip("-c", str(ROOT / "constraints.txt"), "-e", f"{ROOT}[dev]" if full else str(ROOT))
    STAMP.write_text(f"{fingerprint} {'full' if full else 'core'}")


def ensure_postgres() -> None:
    """The serve tests start a throwaway PostgreSQL (tests/pg.py) from the Debian package's binaries: install the
    package once when they are missing and this is root on Debian (apt-get); otherwise say what is missing."""
    import glob
    import shutil

    if glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return
    if not (os.path.isfile("/etc/debian_version") and shutil.which("apt-get") and os.geteuid() == 0):
        print("PostgreSQL binaries not found (/usr/lib/postgresql/*/bin/initdb): the shared serve-database tests "
              "will fail; install the postgresql package (apt-get install --no-install-recommends postgresql)",
              flush=True)
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"]
    for cmd in (["apt-get", "update", "-q"], install):
        print("Installing PostgreSQL for the serve tests: +", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, env=env)


def _parallel_args(rest: list[str]) -> list[str]:
    """The suite runs on up to 4 pytest-xdist workers (a module fixture is built once per worker that runs its tests;
    tests marked xdist_group(NAME) share one worker, so an expensive fixture such as the real LoRA run is built once);
    tests/conftest.py gives each worker its share of the cores. Your own `-n`/`--dist` (`-n 0`: one process) override
    this."""
    if any(arg.startswith(("-n", "--numprocesses", "--dist")) or arg == "no:xdist" for arg in rest):
        return []
    return ["-n", str(max(1, min(os.cpu_count() or 1, 4))), "--dist", "loadgroup"]


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0
    task, rest = argv[0], argv[1:]
    ensure_env(full=task not in ("quickstart", "tuneforge"))
    if task in ("setup", "test"):
        ensure_postgres()
    env = dict(os.environ)
    if task == "setup":
        return 0
    if task == "test":
        cmd = [str(PY), "-m", "pytest", *_parallel_args(rest), *rest]
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
