"""The code sandbox confines the file system in the kernel: each escape below, tried by the candidate itself and by
a child interpreter it starts (no audit hook there, so only the kernel stands in the way), leaves everything
outside the private working directory untouched; and a machine that cannot confine refuses to run the code."""
from __future__ import annotations

import errno
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tuneforge.eval.sandbox import (
    SandboxLimits,
    SandboxUnavailableError,
    check_confinement,
    run_candidates,
)


def _confined() -> str | None:
    try:
        check_confinement()
    except SandboxUnavailableError as exc:
        return exc.message
    return None


_WHY_NOT = _confined()
needs_confinement = pytest.mark.skipif(_WHY_NOT is not None, reason=f"sandbox unavailable here: {_WHY_NOT}")

LIMITS = SandboxLimits(timeout_s=20.0, memory_mb=512, allow_subprocess=True)

# {out} is a directory outside the sandbox holding `victim` (content "v", mode 0644); {tmp} a fresh /tmp path.
ESCAPES = {
    "open_write": "open('{out}/new.txt', 'w').write('x')",
    "append_victim": "open('{out}/victim', 'a').write('pwned')",
    "rename": "os.rename('{out}/victim', '{out}/renamed')",
    "hard_link": "os.link('{out}/victim', '{out}/hardlink')",
    "hard_link_into_sandbox": "os.link('{out}/victim', 'inside'); open('inside', 'a').write('pwned')",
    "symlink": "os.symlink('/etc/hostname', '{out}/sym')",
    "symlink_from_sandbox": "os.symlink('{out}/victim', 'ln'); open('ln', 'a').write('pwned')",
    "sqlite3": "import sqlite3; c = sqlite3.connect('{out}/x.db'); c.execute('create table t(a)'); c.commit()",
    "setxattr": "os.setxattr('{out}/victim', 'user.pwned', b'1')",
    "chmod": "os.chmod('{out}/victim', 0o777)",
    "utime": "os.utime('{out}/victim', (0, 0))",
    "truncate": "os.truncate('{out}/victim', 0)",
    "remove": "os.remove('{out}/victim')",
    "mkdir": "os.mkdir('{out}/dir')",
    "tmp_outside_sandbox": "open('{tmp}', 'w').write('x')",
    "dev_shm": "open('/dev/shm/{name}', 'w').write('x')",
}


def _snapshot(out: Path) -> dict:
    victim = out / "victim"
    return {
        "listing": sorted(p.name for p in out.iterdir()),
        "victim": victim.read_text() if victim.exists() else None,
        "mode": oct(victim.stat().st_mode) if victim.exists() else None,
        "mtime": victim.stat().st_mtime_ns if victim.exists() else None,
        "xattrs": os.listxattr(victim) if victim.exists() else None,
    }


@pytest.fixture(scope="module")
def escapes(tmp_path_factory):
    """Run every escape both ways in one parallel batch; per case the outside state before and after."""
    cases, codes = [], []
    for name, template in ESCAPES.items():
        for how in ("direct", "child"):
            out = tmp_path_factory.mktemp(f"{name}-{how}")
            (out / "victim").write_text("v")
            (out / "victim").chmod(0o644)
            token = f"tuneforge-escape-{secrets.token_hex(6)}"
            body = "import os\n" + template.format(out=out, tmp=f"/tmp/{token}", name=token)
            if how == "child":
                # A fresh interpreter without the runner's audit hook: only the kernel can stop it.
                body = (f"import subprocess, sys\nr = subprocess.run([sys.executable, '-c', {body!r}])\n"
                        "assert r.returncode == 0, 'the child was stopped'\n")
            cases.append((name, how, out, Path("/tmp", token), Path("/dev/shm", token), _snapshot(out)))
            codes.append(body)
    results = run_candidates(codes, "", LIMITS, workers=2)
    return {(name, how): (result, out, tmp, shm, before)
            for (name, how, out, tmp, shm, before), result in zip(cases, results)}


@needs_confinement
@pytest.mark.parametrize("how", ["direct", "child"])
@pytest.mark.parametrize("name", list(ESCAPES))
def test_no_write_escapes_the_private_directory(escapes, name, how):
    result, out, tmp, shm, before = escapes[(name, how)]
    try:
        assert _snapshot(out) == before, result
        assert not tmp.exists() and not shm.exists()
        assert result.status != "passed", result
    finally:
        for path in (tmp, shm):
            path.unlink(missing_ok=True)


@needs_confinement
def test_shell_children_inherit_the_confinement(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("v")
    victim.chmod(0o644)
    script = (f"echo x > {tmp_path}/sh.txt; echo x >> {victim}; chmod 777 {victim}; rm -f {victim}; "
              f"touch {tmp_path}/touched; echo inside > here.txt; cat here.txt")
    code = (f"import subprocess\nr = subprocess.run(['sh', '-c', {script!r}], capture_output=True, text=True)\n"
            "print(r.stdout)\n")
    result = run_candidates([code], "", LIMITS)[0]
    assert result.status == "passed" and "inside" in result.stdout_tail  # writing its own directory works
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim"]
    assert victim.read_text() == "v" and oct(victim.stat().st_mode) == "0o100644"


@needs_confinement
def test_ordinary_work_inside_the_private_directory_still_works():
    code = textwrap.dedent("""
        import os, shutil, sqlite3, tempfile
        open('a', 'w').write('x')
        os.mkdir('d')
        os.rename('a', 'd/b')
        db = sqlite3.connect('db.sqlite'); db.execute('create table t(a)'); db.commit(); db.close()
        shutil.copyfile('d/b', 'c')
        shutil.rmtree('d')
        tempfile.mkstemp()
        open(os.devnull, 'w').write('x')
        print(sorted(n for n in os.listdir('.') if not n.startswith('tmp')))
    """)
    result = run_candidates([code], "", SandboxLimits(timeout_s=20.0))[0]
    assert result.status == "passed", result
    assert "['c', 'db.sqlite']" in result.stdout_tail
    assert result.confinement.startswith("confined: Landlock ABI")


def _run_under_policy(errnum: int, require: bool, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run the sandbox from a process whose seccomp policy hides Landlock, as some container runtimes do."""
    script = textwrap.dedent(f"""
        import errno, sys
        from tuneforge.eval.confine import install_errno_filter
        from tuneforge.eval.sandbox import SandboxLimits, SandboxUnavailableError, run_candidate
        install_errno_filter([444, 445, 446], {errnum})
        try:
            r = run_candidate("open({str(tmp_path / 'ran')!r}, 'w').close()", "",
                              SandboxLimits(timeout_s=20.0, require_confinement={require}))
        except SandboxUnavailableError as exc:
            print("REFUSED", exc)
        else:
            print("RAN", r.status, r.confinement)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.parametrize("errnum, why", [
    (errno.ENOSYS, "the kernel has no Landlock system calls"),
    (errno.EOPNOTSUPP, "not enabled at boot"),
])
def test_without_landlock_the_sandbox_refuses_to_run_code(tmp_path, errnum, why):
    proc = _run_under_policy(errnum, True, tmp_path)
    if "seccomp" in proc.stderr and "Unavailable" in proc.stderr:
        pytest.skip(f"cannot install a seccomp filter here: {proc.stderr[-300:]}")
    assert proc.stdout.startswith("REFUSED the code sandbox cannot confine the file system"), proc.stderr
    assert "Landlock" in proc.stdout and why in proc.stdout and "lsm" in proc.stdout  # the hint
    assert not (tmp_path / "ran").exists()  # the code never ran


def test_running_unconfined_is_an_explicit_opt_out(tmp_path):
    proc = _run_under_policy(errno.ENOSYS, False, tmp_path)
    if "seccomp" in proc.stderr and "Unavailable" in proc.stderr:
        pytest.skip(f"cannot install a seccomp filter here: {proc.stderr[-300:]}")
    assert proc.stdout.startswith("RAN error UNCONFINED (require_confinement=False): Landlock:"), proc.stderr


@needs_confinement
def test_the_candidate_interpreter_holds_no_ctypes_object_and_keeps_the_confinement():
    # Confining needs ctypes; the candidate runs in a re-executed interpreter, so gc cannot hand it a foreign
    # function pointer that would bypass the audit hook, while no_new_privs and seccomp survive the exec.
    code = textwrap.dedent("""
        import gc, sys
        found = [o for o in gc.get_objects()
                 if type(o).__module__.startswith("ctypes") or getattr(o, "__name__", "") in ("ctypes", "_ctypes")]
        status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
        print(len(found), "_ctypes" in sys.modules, status["NoNewPrivs"].strip(), status["Seccomp"].strip(),
              status["CapEff"].strip())
    """)
    result = run_candidates([code], "", SandboxLimits(timeout_s=20.0))[0]
    assert result.status == "passed", result
    assert result.stdout_tail.split() == ["0", "False", "1", "2", "0000000000000000"]
