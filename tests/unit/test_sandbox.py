"""The code sandbox: outcomes, limits, network/process blocking, output truncation, pass@k over problems."""
from __future__ import annotations

import time

import pytest

from tuneforge.eval.sandbox import (
    CodeProblem,
    SandboxLimits,
    SandboxUnavailableError,
    check_confinement,
    evaluate_problems,
    run_candidate,
    run_candidates,
)


def _unavailable() -> str | None:
    try:
        check_confinement()
    except SandboxUnavailableError as exc:
        return exc.message
    return None


# On a machine without Landlock every run raises SandboxUnavailableError (tested in test_sandbox_confinement.py).
pytestmark = pytest.mark.skipif(_unavailable() is not None, reason=f"sandbox unavailable here: {_unavailable()}")

FAST = SandboxLimits(timeout_s=5.0, memory_mb=256)
TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"


@pytest.fixture(scope="module")
def outcomes():
    # One parallel batch for the quick cases keeps the module fast on two cores.
    cases = {
        "good": "def add(a, b):\n    return a + b\n",
        "wrong": "def add(a, b):\n    return a - b\n",
        "syntax": "def add(a, b)\n    return a + b\n",
        "memory": "x = bytearray(1024 ** 3)\ndef add(a, b):\n    return a + b\n",
        "network": "import socket\nsocket.create_connection(('127.0.0.1', 9))\n",
        "raw_socket": "import _socket\n_socket.socket()\n",
        "subprocess": "import os\nos.system('echo hi')\n",
        "fork": "import os\nos.fork()\n",
        "ctypes": "import ctypes\n",
        "exit_early": "import sys\nsys.exit(0)\n",
        "os_exit": "import os\nos._exit(0)\n",
        "write_inside": "open('scratch.txt', 'w').write('ok')\n"
                        "def add(a, b):\n    return len(open('scratch.txt').read()) * 0 + a + b\n",
        "env": "import os\nassert set(os.environ) <= {'PATH', 'HOME', 'TMPDIR', 'LANG', 'LC_ALL'}, sorted(os.environ)\n"
               "assert os.listdir('.') == []\ndef add(a, b):\n    return a + b\n",
    }
    results = run_candidates(list(cases.values()), TESTS, FAST, workers=2)
    return dict(zip(cases, results))


def test_passing_and_failing_solutions(outcomes):
    assert outcomes["good"].status == "passed" and outcomes["good"].passed
    wrong = outcomes["wrong"]
    assert wrong.status == "failed" and "AssertionError" in wrong.stderr_tail
    assert outcomes["syntax"].status == "error" and "SyntaxError" in outcomes["syntax"].reason


def test_memory_bomb_is_an_error(outcomes):
    r = outcomes["memory"]
    assert r.status == "error" and "memory limit" in r.reason


@pytest.mark.parametrize("case", ["network", "raw_socket"])
def test_network_is_blocked(outcomes, case):
    r = outcomes[case]
    assert r.status == "error"
    assert "PermissionError: sandbox: socket." in r.stderr_tail


@pytest.mark.parametrize("case, event", [("subprocess", "os.system"), ("fork", "os.fork"),
                                         ("ctypes", "import of ctypes")])
def test_processes_and_ctypes_are_blocked(outcomes, case, event):
    assert outcomes[case].status == "error"
    assert f"sandbox: {event} is blocked" in outcomes[case].stderr_tail


def test_exiting_before_the_tests_is_not_a_pass(outcomes):
    assert outcomes["exit_early"].status == "error"
    assert outcomes["os_exit"].status == "error" and "completion marker" in outcomes["os_exit"].reason


def test_cwd_is_an_empty_private_dir_with_a_minimal_env(outcomes):
    assert outcomes["write_inside"].status == "passed"
    assert outcomes["env"].status == "passed", outcomes["env"].stderr_tail


def test_writes_outside_the_sandbox_are_blocked(tmp_path):
    target = tmp_path / "escaped.txt"
    r = run_candidate(f"open({str(target)!r}, 'w').write('x')\n", "", FAST)
    assert r.status == "error" and "outside the sandbox directory" in r.reason
    assert not target.exists()


def test_infinite_loop_times_out_within_the_limit():
    start = time.monotonic()
    r = run_candidate("while True:\n    pass\n", "", SandboxLimits(timeout_s=1.0))
    elapsed = time.monotonic() - start
    assert r.status == "timeout" and "wall-clock" in r.reason
    assert elapsed < 3.0


def test_output_is_truncated_to_the_tail():
    r = run_candidate("print('a' * 50000 + 'END')\n", "", SandboxLimits(max_output_bytes=100))
    assert r.status == "passed" and r.output_truncated
    assert len(r.stdout_tail) == 100 and r.stdout_tail.endswith("END\n")
    r = run_candidate("import sys\nsys.stderr.write('e' * 5000)\nraise ValueError('boom')\n", "",
                      SandboxLimits(max_output_bytes=200))
    assert r.status == "error" and r.output_truncated and r.stderr_tail.rstrip().endswith("ValueError: boom")
    assert len(r.stderr_tail.encode()) <= 200


def test_file_size_limit():
    r = run_candidate("open('big', 'wb').write(b'x' * (3 * 1024 * 1024))\n", "", SandboxLimits(file_size_mb=1))
    assert r.status == "error" and "File too large" in r.reason


def test_evaluate_problems_reports_pass_at_k():
    good, bad = "def add(a, b):\n    return a + b\n", "def add(a, b):\n    return 0\n"
    problems = [CodeProblem("p1", [good, bad, bad], TESTS), CodeProblem("p2", [bad], TESTS)]
    results, means = evaluate_problems(problems, ks=(1, 2), limits=FAST, workers=2)
    assert [(r.task_id, r.n, r.c) for r in results] == [("p1", 3, 1), ("p2", 1, 0)]
    assert results[0].pass_at == pytest.approx({1: 1 / 3, 2: 1 - 1 / 3})  # 1 - C(2,2)/C(3,2)
    assert 2 not in results[1].pass_at  # k > n: undefined, skipped
    assert means == pytest.approx({1: (1 / 3 + 0) / 2, 2: 2 / 3})


def test_cpu_time_limit_stops_a_busy_loop_before_the_wall_clock():
    r = run_candidate("while True:\n    pass\n", "", SandboxLimits(timeout_s=10.0, cpu_s=1))
    assert r.status == "timeout" and "CPU-time limit of 1 s" in r.reason
    assert r.duration_s < 5.0


def test_the_completion_marker_is_not_reachable_from_main():
    probe = (
        "import __main__, os\n"
        "print(getattr(__main__, '_nonce', None), getattr(__main__, 'cfg', {}).get('nonce'), flush=True)\n"
        "os._exit(0)\n"
    )
    r = run_candidate(probe, "", FAST)
    assert r.status == "error" and "None None" in r.stdout_tail
