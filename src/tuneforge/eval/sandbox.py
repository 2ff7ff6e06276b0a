"""Run model-written code against tests in a constrained subprocess, and estimate pass@k.

What one candidate run does
---------------------------
The program ``candidate code + "\\n\\n" + test code`` runs in a fresh ``python -I -B`` process (isolated mode:
PYTHON* environment variables, the user site directory and the current directory are ignored; no .pyc files
are written). The process:

* starts in a new session / process group, with an empty private temporary directory as cwd, HOME and TMPDIR
  and a minimal environment (no tokens or credentials inherited from the parent's environment);
* lowers its own limits before running any candidate code (hard limits too, so the code cannot raise them):
  address space (RLIMIT_AS), CPU seconds (RLIMIT_CPU), size of any file it writes (RLIMIT_FSIZE, which also
  caps stdout/stderr because they are redirected to files), no core dumps;
* confines itself in the kernel (confine.py; Linux Landlock + a seccomp filter via ctypes, no package, no root):
  it drops all capabilities, and from then on it and every process it starts can write only beneath the
  private directory (and /dev/null): writes, creates, renames, links, removals and truncations anywhere else
  (/tmp, /dev/shm and the user's files included) fail, whether they come from ``open``, ``sqlite3``, a C
  extension or a shell child; chmod/chown/utime/xattr changes and ``socket()`` fail everywhere. If the machine
  cannot do this (kernel < 5.13, Landlock disabled at boot, a container policy hiding the syscalls, an
  architecture without a syscall table here), the candidate is NOT run: ``SandboxUnavailableError`` names the
  missing piece. ``SandboxLimits(require_confinement=False)`` runs it anyway, for a throwaway VM or container
  that is itself the boundary; each result's ``confinement`` records what was applied. The confined process
  then re-executes a fresh interpreter for the candidate, so no ctypes object survives into it;
* installs a CPython audit hook (PEP 578; it cannot be removed from Python code) that raises
  ``PermissionError`` on: every ``socket.*`` event (creating, connecting, binding sockets, DNS look-ups);
  process creation (``subprocess.Popen``, ``os.system``, ``os.exec*``, ``os.posix_spawn``, ``os.fork``,
  ``os.forkpty``) unless ``allow_subprocess``; ``os.kill``/``os.killpg``; creating symlinks; importing
  ``ctypes``/``cffi``/``_posixsubprocess`` (they reach raw system calls without audit events); opening files
  for writing, or removing/renaming/chmod-ing/linking paths, outside the sandbox directory. It gives clearer
  errors than the kernel and blocks process creation; the kernel layer is what holds when the hook is bypassed.
The parent waits with a wall-clock timeout and SIGKILLs the whole process group when it expires (and after a
normal exit, to reap anything left behind). Only the last ``max_output_bytes`` of stdout/stderr are kept.

A run counts as *passed* only if the program ran to its end: the runner prints a random per-run marker after
the program finishes, so ``sys.exit(0)`` or ``os._exit(0)`` half-way through the tests is not a pass. For
``unittest``-style tests call ``unittest.main(exit=False)``.

What it does NOT protect against (read before running code you would not run yourself)
--------------------------------------------------------------------------------------
Writes and the network are confined by the kernel; the rest is defence against accidents and careless model
output, not a security boundary. In particular:

* **Reading files**: the code runs as your user and can read anything you can (SSH keys, cloud credentials,
  the dataset). With the network blocked it cannot send them anywhere, but it can print them into the
  captured output, which ends up in reports.
* **Escapes from the audit hook** (C extensions, interpreter bugs) still meet the kernel confinement, but the
  hook's process and signal blocking can then be bypassed: fork bombs are bounded only by the wall-clock
  kill, and on kernels before Landlock ABI 6 (Linux 6.12) such code can signal your other processes.
* **Resources**: no cgroup. RLIMIT_AS caps one process's address space, not the machine's memory, and
  workers x memory_mb can still be large; disk use inside the sandbox directory is bounded per file by
  RLIMIT_FSIZE, not in total. Pipes and files opened before confinement (stdout/stderr) remain writable.
* **Process-group escape**: with ``allow_subprocess=True`` a child can call ``setsid`` and outlive the kill
  (still confined).
* **Forging a pass**: determined code can find the completion marker in the runner's memory and print it.
* Usability cost: ``ctypes`` is blocked, so packages that import it at start-up (numpy, for one) cannot be
  imported by candidates; chmod/utime fail inside the sandbox directory too (``shutil.copy``'s mode copy,
  ``Path.touch`` of an existing file), and so does ``multiprocessing`` (its locks live in /dev/shm).
  Fine for HumanEval/MBPP-style stdlib tasks; not for numeric ones.

For untrusted code at scale still prefer a container, gVisor, nsjail or a throwaway VM with no network, and
treat these limits as a second layer.

pass@k
------
``pass_at_k(n, c, k)`` is the unbiased estimator of Chen et al. (2021): with ``n`` samples of which ``c`` pass,
``1 - C(n-c, k) / C(n, k)``, computed as ``1 - prod_{i=n-c+1..n} (1 - k/i)`` so no huge binomials are formed.
``score_code_samples(samples, tests, k_values)`` scores one item of a ``kind: code`` task (eval/tasks.py): it
takes the program out of each model reply (``extract_code``), runs it with the item's tests and returns the
per-item pass@k; a task's pass@k is the mean over its items.
"""
from __future__ import annotations

import json
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

from tuneforge.errors import TuneforgeError

__all__ = [
    "CandidateResult",
    "CodeProblem",
    "ProblemResult",
    "SandboxLimits",
    "SandboxUnavailableError",
    "check_confinement",
    "evaluate_problems",
    "extract_code",
    "pass_at_k",
    "run_candidate",
    "run_candidates",
    "score_code_samples",
]

Status = Literal["passed", "failed", "timeout", "error"]

# Exit codes the runner uses to tell the parent how the program ended.
_EXIT_ASSERTION = 1  # a test assertion failed -> "failed"
_EXIT_EXCEPTION = 2  # any other exception -> "error"
_EXIT_MEMORY = 3  # MemoryError -> "error"
_EXIT_EARLY = 4  # sys.exit(0) before the end -> "error"
_EXIT_NONZERO = 5  # sys.exit(non-zero), e.g. a failing unittest.main() -> "failed"
_EXIT_UNCONFINED = 6  # the kernel confinement could not be applied -> SandboxUnavailableError, code not run


class SandboxUnavailableError(TuneforgeError):
    """This machine cannot confine the sandbox's file system (no Landlock/seccomp); the message says which."""


@lru_cache(maxsize=1)
def _confine_source() -> str:
    return Path(__file__).with_name("confine.py").read_text(encoding="utf-8")


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 10.0  # wall clock, enforced by the parent
    memory_mb: int = 512  # RLIMIT_AS; below ~64 MB the interpreter itself cannot start
    cpu_s: int | None = None  # RLIMIT_CPU; None -> ceil(timeout_s) + 1, a backstop if the parent dies
    file_size_mb: int = 16  # RLIMIT_FSIZE: largest file (including captured stdout/stderr) the code may write
    max_output_bytes: int = 8192  # tail of stdout/stderr kept in the result
    allow_subprocess: bool = False  # children inherit the kernel confinement either way
    # Off only where the whole run is already disposable (a throwaway VM/container): then a machine without
    # Landlock runs the code under the audit hook alone, and each result's `confinement` says so.
    require_confinement: bool = True

    def cpu_seconds(self) -> int:
        return self.cpu_s if self.cpu_s is not None else math.ceil(self.timeout_s) + 1


@dataclass(frozen=True)
class CandidateResult:
    status: Status
    reason: str
    duration_s: float
    returncode: int | None
    stdout_tail: str = ""
    stderr_tail: str = ""
    output_truncated: bool = False
    confinement: str = ""  # what the child applied ("confined: Landlock ABI 7 + seccomp ...") or why not

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class CodeProblem:
    task_id: str
    candidates: Sequence[str]  # n sampled completions (full programs or function bodies with their def)
    tests: str  # code appended after each candidate; raises AssertionError on failure


@dataclass(frozen=True)
class ProblemResult:
    task_id: str
    results: list[CandidateResult]
    pass_at: dict[int, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.results)

    @property
    def c(self) -> int:
        return sum(r.passed for r in self.results)


# Two programs, each passed with -c, run one after the other in the same process. Stage 1 (_CONFINER) reads a
# length-prefixed header from stdin, lowers the limits, confines the process (confine.py, which needs ctypes)
# and execs a fresh interpreter for stage 2 (_RUNNER): limits, Landlock, seccomp and no_new_privs survive exec,
# while no ctypes object does, so candidates cannot fish one out of gc.get_objects(). Stage 2 reads the rest of
# stdin (the program). The sandbox directory holds nothing the candidate did not create itself.
_CONFINER = r'''
import json, os, resource, sys

def _read(n):
    data = b""
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            break
        data += chunk
    return data

head = json.loads(_read(int(_read(12).decode("ascii"))).decode("utf-8"))
_lim = head["limits"]
for _name, _value in (("RLIMIT_AS", _lim["memory"]), ("RLIMIT_FSIZE", _lim["fsize"]), ("RLIMIT_CORE", 0)):
    resource.setrlimit(getattr(resource, _name), (_value, _value))
resource.setrlimit(resource.RLIMIT_CPU, (_lim["cpu"], _lim["cpu"] + 1))
fd, ns = head["status_fd"], {"__name__": "tuneforge_confine"}
try:
    exec(compile(head["confine_source"], "<tuneforge-confine>", "exec"), ns)
    status = "confined: " + ns["confine"](os.path.realpath(os.getcwd()))
except Exception as exc:
    why = str(exc) if type(exc).__name__ == "Unavailable" else type(exc).__name__ + ": " + str(exc)
    if head["require_confinement"]:
        os.write(fd, ("unavailable: " + why).encode("utf-8", "replace"))
        os._exit(6)
    status = "UNCONFINED (require_confinement=False): " + why
os.write(fd, status.encode("utf-8", "replace"))
os.close(fd)
sys.stdout.flush()
sys.stderr.flush()
try:
    os.execv(sys.executable, [sys.executable, "-I", "-B", "-c", head["runner"]])
except OSError as exc:
    sys.stderr.write("sandbox: cannot start the runner: %s\n" % (exc,))
    os._exit(2)
'''

_RUNNER = r'''
import json, os, sys
cfg = json.loads(sys.stdin.buffer.read().decode("utf-8"))
sys.stdin.close()
sys.stdin = open(os.devnull)

def _install(root, allow_subprocess):
    import os as _os
    _abspath, _normpath, _fspath = _os.path.abspath, _os.path.normpath, _os.fspath
    _W = _os.O_WRONLY | _os.O_RDWR | _os.O_APPEND | _os.O_CREAT | _os.O_TRUNC
    _prefix = root.rstrip("/") + "/"
    proc = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
            "os.forkpty", "os.startfile"}
    always = {"os.kill", "os.killpg", "os.symlink"}
    blocked = always if allow_subprocess else always | proc
    mods = {"ctypes", "_ctypes", "cffi", "_cffi_backend"} | (set() if allow_subprocess else {"_posixsubprocess"})
    paths = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link",
             "os.truncate", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile", "shutil.copytree",
             "os.chflags", "os.lchmod", "os.mknod", "os.mkfifo"}

    def inside(p):
        if isinstance(p, int):
            return True  # an already-open descriptor
        try:
            p = _fspath(p)
        except TypeError:
            return True  # not a path argument
        if isinstance(p, bytes):
            p = p.decode("utf-8", "surrogateescape")
        if not isinstance(p, str):
            return True
        p = _normpath(_abspath(p))
        return p == root or p.startswith(_prefix) or p == _os.devnull

    def deny(what):
        raise PermissionError("sandbox: " + what + " is blocked")

    def hook(event, args):
        if event.startswith("socket.") or event.startswith("ctypes.") or event in blocked:
            deny(event)
        if event == "import" and args[0].split(".")[0] in mods:
            deny("import of " + args[0])
        if event == "open":
            path, mode, flags = args
            writing = ((isinstance(flags, int) and flags & _W)
                       or (isinstance(mode, str) and any(c in mode for c in "wax+")))
            if writing and not inside(path):
                deny("writing " + repr(path) + " outside the sandbox directory")
        elif event in paths:
            for a in args:
                if isinstance(a, (str, bytes)) or hasattr(a, "__fspath__"):
                    if not inside(a):
                        deny(event + " on " + repr(a) + " outside the sandbox directory")

    sys.addaudithook(hook)

_install(os.path.realpath(os.getcwd()), cfg["allow_subprocess"])
del _install

def _main(cfg):
    # Inside a function so the marker is a local, not an attribute of __main__ any candidate can import.
    import linecache, traceback
    nonce, src = cfg.pop("nonce"), cfg.pop("source")
    linecache.cache["<candidate>"] = (len(src), None, src.splitlines(True), "<candidate>")

    def end(code):
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)

    try:
        exec(compile(src, "<candidate>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    except AssertionError:
        traceback.print_exc()
        end(1)
    except MemoryError:
        sys.stderr.write("MemoryError: memory limit exceeded\n")
        end(3)
    except SystemExit as e:
        if e.code in (0, None):
            sys.stderr.write("SystemExit(0) before the end of the tests\n")
            end(4)
        sys.stderr.write("SystemExit(%r)\n" % (e.code,))
        end(5)
    except BaseException:
        traceback.print_exc()
        end(2)
    sys.stdout.write("\n" + nonce + "\n")
    # os._exit skips the candidate's atexit handlers and threads, which could otherwise print after the marker.
    end(0)

_main(cfg)
'''


def _tail(path: Path, limit: int) -> tuple[str, bool, int]:
    size = path.stat().st_size
    with path.open("rb") as fh:
        if size > limit:
            fh.seek(size - limit)
        data = fh.read()
    return data.decode("utf-8", errors="replace"), size > limit, size


def _minimal_env(work: str) -> dict[str, str]:
    # Deliberately not inherited: the parent's environment holds tokens (HF_TOKEN, cloud keys) and proxies.
    return {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # group already empty


def run_candidate(code: str, tests: str = "", limits: SandboxLimits = SandboxLimits()) -> CandidateResult:
    """Run one candidate program followed by its tests; see the module docstring for what is enforced.

    Raises SandboxUnavailableError, without running the code, when the file system cannot be confined here
    and ``limits.require_confinement`` is on.
    """
    nonce = "tuneforge-sandbox-done-" + secrets.token_hex(16)
    source = code if not tests else code.rstrip("\n") + "\n\n" + tests
    confine_source = _confine_source()
    status_read, status_write = os.pipe()
    head = json.dumps(
        {
            "require_confinement": limits.require_confinement,
            "confine_source": confine_source,
            "status_fd": status_write,
            "runner": _RUNNER,
            "limits": {
                "memory": limits.memory_mb * 1024 * 1024,
                "fsize": limits.file_size_mb * 1024 * 1024,
                "cpu": limits.cpu_seconds(),
            },
        }
    ).encode("utf-8")
    body = json.dumps({"nonce": nonce, "source": source, "allow_subprocess": limits.allow_subprocess}).encode("utf-8")
    payload = b"%012d" % len(head) + head + body
    with tempfile.TemporaryDirectory(prefix="tuneforge-sandbox-") as root, os.fdopen(status_read, "rb") as status:
        work = os.path.join(root, "work")
        os.mkdir(work, 0o700)
        out_path, err_path = Path(root, "stdout"), Path(root, "stderr")
        with out_path.open("wb") as out, err_path.open("wb") as err:
            start = time.monotonic()
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-I", "-B", "-c", _CONFINER],
                    stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=work, env=_minimal_env(work),
                    start_new_session=True, close_fds=True, pass_fds=(status_write,),
                )
            finally:
                os.close(status_write)  # the child holds the only write end, so the read below sees EOF
            timed_out = False
            try:
                proc.communicate(payload, timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc.pid)
                proc.wait()
            except BaseException:
                _kill_group(proc.pid)
                proc.wait()
                raise
            duration = time.monotonic() - start
            _kill_group(proc.pid)  # anything the program left running in its group
        confinement = status.read().decode("utf-8", "replace")
        if proc.returncode == _EXIT_UNCONFINED and confinement.startswith("unavailable: "):
            raise SandboxUnavailableError(
                "the code sandbox cannot confine the file system on this machine, so it will not run untrusted "
                f"code: {confinement[len('unavailable: '):]}",
                hint="the sandbox needs Linux >= 5.13 with Landlock enabled (cat /sys/kernel/security/lsm lists "
                     "'landlock') and seccomp; in Docker use a recent engine or allow the landlock_* syscalls. Only "
                     "inside a throwaway VM or container, SandboxLimits(require_confinement=False) runs it anyway.")
        stdout, out_trunc, _ = _tail(out_path, limits.max_output_bytes + len(nonce) + 2)
        stderr, err_trunc, _ = _tail(err_path, limits.max_output_bytes)
    completed = stdout.endswith("\n" + nonce + "\n")
    if completed:
        stdout = stdout[: -len(nonce) - 2]
    if len(stdout) > limits.max_output_bytes:
        stdout, out_trunc = stdout[-limits.max_output_bytes:], True
    status, reason = _classify(proc.returncode, timed_out, completed, limits)
    last = _last_line(stderr)
    if proc.returncode in (_EXIT_ASSERTION, _EXIT_EXCEPTION, _EXIT_NONZERO) and last:
        reason = f"{reason}: {last}"
    return CandidateResult(status, reason, duration, proc.returncode, stdout, stderr, out_trunc or err_trunc,
                           confinement)


@lru_cache(maxsize=1)
def check_confinement() -> str:
    """What the sandbox applies on this machine ("confined: Landlock ABI ... + seccomp ..."), checked once by
    running an empty program; SandboxUnavailableError (naming the missing mechanism) when it cannot confine.
    Call it before generating samples so a machine without Landlock fails before the expensive part."""
    result = run_candidate("", "", SandboxLimits(timeout_s=60.0))
    if not result.confinement.startswith("confined: "):
        raise SandboxUnavailableError(f"the code sandbox did not report its confinement: {result.reason}; "
                                      f"stderr: {_last_line(result.stderr_tail) or '(empty)'}")
    return result.confinement


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _classify(rc: int | None, timed_out: bool, completed: bool, limits: SandboxLimits) -> tuple[Status, str]:
    if timed_out:
        return "timeout", f"wall-clock limit of {limits.timeout_s:g} s exceeded; process group killed"
    if rc == 0:
        if completed:
            return "passed", "all tests ran to the end"
        return "error", "exited with status 0 before the tests finished (no completion marker)"
    if rc == _EXIT_ASSERTION:
        return "failed", "a test assertion failed"
    if rc == _EXIT_NONZERO:
        return "failed", "the tests exited with a non-zero status"
    if rc == _EXIT_MEMORY:
        return "error", f"memory limit of {limits.memory_mb} MB exceeded (MemoryError)"
    if rc == _EXIT_EARLY:
        return "error", "sys.exit(0) before the end of the tests"
    if rc == _EXIT_EXCEPTION:
        return "error", "the program raised an exception"
    if rc is not None and rc < 0:
        sig = -rc
        if sig == signal.SIGXCPU:
            return "timeout", f"CPU-time limit of {limits.cpu_seconds()} s exceeded (SIGXCPU)"
        if sig == signal.SIGKILL:
            # We did not send it (no wall timeout): the CPU hard limit (soft + 1 s) or the kernel's OOM killer.
            return "error", "killed by SIGKILL (CPU hard limit or the kernel OOM killer)"
        if sig == signal.SIGXFSZ:
            return "error", f"file-size limit of {limits.file_size_mb} MB exceeded (SIGXFSZ)"
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        return "error", f"killed by signal {name}"
    return "error", f"exited with status {rc}"


def run_candidates(
    candidates: Sequence[str], tests: str, limits: SandboxLimits = SandboxLimits(), workers: int | None = None
) -> list[CandidateResult]:
    """Run candidates in parallel (threads waiting on subprocesses), at most ``workers`` at a time; input order."""
    if not candidates:
        return []
    workers = workers or max(1, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=min(workers, len(candidates))) as pool:
        return list(pool.map(lambda code: run_candidate(code, tests, limits), candidates))


def evaluate_problems(
    problems: Sequence[CodeProblem], ks: Sequence[int] = (1,), limits: SandboxLimits = SandboxLimits(),
    workers: int | None = None,
) -> tuple[list[ProblemResult], dict[int, float]]:
    """Run every candidate of every problem (one shared worker pool) and return per-problem and mean pass@k.

    A k larger than a problem's sample count is skipped for that problem (the estimator is undefined there)
    and the mean for that k covers only problems with at least k samples.
    """
    jobs = [(pi, code, p.tests) for pi, p in enumerate(problems) for code in p.candidates]
    workers = workers or max(1, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs) or 1))) as pool:
        outcomes = list(pool.map(lambda job: run_candidate(job[1], job[2], limits), jobs))
    per_problem: list[list[CandidateResult]] = [[] for _ in problems]
    for (pi, _, _), res in zip(jobs, outcomes):
        per_problem[pi].append(res)
    results = []
    for p, res in zip(problems, per_problem):
        n, c = len(res), sum(r.passed for r in res)
        results.append(ProblemResult(p.task_id, res, {k: pass_at_k(n, c, k) for k in ks if 1 <= k <= n}))
    means = {}
    for k in ks:
        vals = [r.pass_at[k] for r in results if k in r.pass_at]
        if vals:
            means[k] = sum(vals) / len(vals)
    return results, means


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): probability that at least one of k samples drawn from n passes."""
    if not (0 <= c <= n):
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not (1 <= k <= n):
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0  # every k-subset contains a passing sample
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i): a product of terms in (0, 1), no overflow.
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:^[ \t]*```[ \t]*$|\Z)", re.DOTALL | re.MULTILINE)


def extract_code(reply: str) -> str:
    """The program in a model reply: its fenced blocks tagged python/py/python3 or untagged, joined (an unclosed
    fence, from a reply cut at max_new_tokens, runs to the end); the whole reply when it has no fence."""
    blocks = [body for lang, body in _FENCE.findall(reply) if lang.lower() in ("", "python", "py", "python3")]
    return "\n\n".join(b.rstrip() for b in blocks) + "\n" if blocks else reply


def score_code_samples(
    samples: Sequence[str], tests: str, k_values: Sequence[int], limits: SandboxLimits = SandboxLimits(),
    workers: int | None = None, extract: bool = True,
) -> dict:
    """Run one item's n sampled replies against its tests; the item's pass@k for every k.

    Returns ``{"scores": {"pass@1": ..., "pass@k": ...}, "n": n, "c": passing samples, "results": [CandidateResult
    per sample, in order]}``. ``extract`` takes the code out of markdown fences first. Every k must be between 1
    and n (the estimator is undefined beyond n: generate at least max(k) samples). SandboxUnavailableError,
    before any sample runs, on a machine that cannot confine the sandbox.
    """
    n = len(samples)
    if n == 0:
        raise ValueError("score_code_samples needs at least one sample")
    bad = [k for k in k_values if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n]
    if bad or not k_values:
        raise ValueError(f"pass@k needs 1 <= k <= n = {n} samples; got k = {list(k_values)}")
    programs = [extract_code(s) if extract else s for s in samples]
    results = run_candidates(programs, tests, limits, workers)
    c = sum(r.passed for r in results)
    return {"scores": {f"pass@{k}": pass_at_k(n, c, k) for k in k_values}, "n": n, "c": c, "results": results}
