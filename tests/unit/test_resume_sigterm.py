"""SIGTERM (schedulers, `docker stop`) ends a run as `interrupted`, resumable with `--resume`; a dead run shows so.

The child is the real CLI, parked (sleeping) inside the training step after checkpoint-4 is complete, so the
signal lands mid-training whatever the machine's speed: the test waits for the hook's "parked" file.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.test_resume_kill import _cli, _config
from tuneforge.atomic import write_json_atomic
from tuneforge.runs.rundir import RunDir, effective_status

PARK_AT_STEP = 5  # global_step while step 6 trains: checkpoint-4 is complete, checkpoint-6 not started

CHILD = """
import sys, time, pathlib
from transformers import Trainer
original = Trainer.training_step
def parking_training_step(self, *args, **kwargs):
    if self.state.global_step == {step}:
        pathlib.Path({parked!r}).write_text("parked")
        time.sleep(3600)
    return original(self, *args, **kwargs)
Trainer.training_step = parking_training_step
from tuneforge.cli.main import main
sys.argv = ["tuneforge", "train", {config!r}]
main()
"""


def _start_parked_child(config: Path, parked: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(step=PARK_AT_STEP, parked=str(parked), config=str(config))],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    while not parked.exists():
        if child.poll() is not None:
            pytest.fail(f"training exited ({child.returncode}) before step {PARK_AT_STEP}:\n"
                        + child.stderr.read().decode()[-3000:])
        time.sleep(0.2)
    return child


@pytest.mark.timeout(300)
def test_sigterm_marks_the_run_interrupted_and_resume_finishes_it(tmp_path, tiny_model_dir):
    config = _config(tmp_path, tiny_model_dir, "termed")
    run = tmp_path / "runs" / "termed"
    child = _start_parked_child(config, tmp_path / "parked")
    try:
        running = json.loads((run / "manifest.json").read_text())
        assert running["status"] == "running"
        assert running["pid"] == child.pid and running["host"] == socket.gethostname()
        assert effective_status(RunDir(run))[0] == "running"  # alive: its pid is there, its heartbeat fresh

        child.send_signal(signal.SIGTERM)
        child.wait(timeout=120)
        stderr = child.stderr.read().decode()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()

    assert child.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "--resume" in stderr  # the console says how to continue
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "interrupted", manifest
    assert "SIGTERM" in manifest["error"] and manifest["finished_at"]
    listing = _wide_cli("runs", "ls", "--runs-dir", str(tmp_path / "runs"))
    assert "│ termed │ interrupted │" in listing.output, listing.output

    resumed = _cli("train", str(config), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "from checkpoint-4 (step 4" in resumed.output
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["training"]["steps"] == 8
    assert manifest["resumes"][0]["from_step"] == 4 and manifest["error"] is None
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if '"loss"' in line]
    assert steps == list(range(1, 9))


def _wide_cli(*args: str):
    """The CLI with a console wide enough that table cells are not folded."""
    from typer.testing import CliRunner

    from tuneforge.cli.main import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"}, catch_exceptions=False)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid no longer names a process
    return child.pid


def _running_run(tmp_path: Path, *, pid: int, host: str, beat_age_s: float | None) -> RunDir:
    run = RunDir(tmp_path / "r")
    write_json_atomic(run.manifest, {"status": "running", "pid": pid, "host": host})
    if beat_age_s is not None:
        write_json_atomic(run.heartbeat, {"pid": pid, "host": host, "at": time.time() - beat_age_s})
    return run


def test_status_of_a_run_whose_process_is_gone(tmp_path):
    here = socket.gethostname()
    status, reason = effective_status(_running_run(tmp_path, pid=_dead_pid(), host=here, beat_age_s=1))
    assert status == "interrupted" and "no longer running" in reason

    # On another host the pid means nothing here: only the heartbeat can tell.
    assert effective_status(_running_run(tmp_path, pid=_dead_pid(), host="elsewhere", beat_age_s=5))[0] == "running"
    status, reason = effective_status(_running_run(tmp_path, pid=os.getpid(), host="elsewhere", beat_age_s=3600))
    assert status == "interrupted" and "heartbeat" in reason

    # A live pid with a stale heartbeat is a reused pid or a hung process: not a running training.
    assert effective_status(_running_run(tmp_path, pid=os.getpid(), host=here, beat_age_s=3600))[0] == "interrupted"
    assert effective_status(_running_run(tmp_path, pid=os.getpid(), host=here, beat_age_s=2))[0] == "running"

    # Finished runs keep their recorded status.
    run = _running_run(tmp_path, pid=_dead_pid(), host=here, beat_age_s=None)
    run.update_manifest(status="completed")
    assert effective_status(run) == ("completed", None)


def test_heartbeat_beats_until_stopped(tmp_path):
    from tuneforge.runs.rundir import Heartbeat

    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    with Heartbeat(run, interval_s=0.05):
        first = json.loads(run.heartbeat.read_text())
        assert first["pid"] == os.getpid()
        time.sleep(0.3)
        later = json.loads(run.heartbeat.read_text())
        assert later["at"] > first["at"]
    stopped = run.heartbeat.read_text()
    time.sleep(0.2)
    assert run.heartbeat.read_text() == stopped


def test_resume_refuses_a_run_that_is_still_running(tmp_path):
    from tuneforge.errors import RunError
    from tuneforge.train.launch import refuse_live_run

    run = _running_run(tmp_path, pid=os.getpid(), host=socket.gethostname(), beat_age_s=1)
    with pytest.raises(RunError, match=f"still running .*pid {os.getpid()}"):
        refuse_live_run(run)
    refuse_live_run(_running_run(tmp_path, pid=_dead_pid(), host=socket.gethostname(), beat_age_s=1))
    # Another host's process cannot be checked (a requeued job may have died there a minute ago): a warning only.
    from rich.console import Console

    console = Console(record=True, width=200)
    refuse_live_run(_running_run(tmp_path, pid=os.getpid(), host="elsewhere", beat_age_s=1), console)
    assert "last seen running" in console.export_text()


def test_launcher_forwards_sigterm_to_torchrun(tmp_path):
    """`docker stop` signals only the launcher (PID 1); torchrun and its workers must hear it too."""
    got = tmp_path / "got"
    ready = tmp_path / "ready"
    script = (f"import signal, sys, time, pathlib\n"
              f"def on_term(*_):\n    pathlib.Path({str(got)!r}).write_text('TERM'); sys.exit(143)\n"
              f"signal.signal(signal.SIGTERM, on_term)\n"
              f"pathlib.Path({str(ready)!r}).write_text('')\n"
              f"time.sleep(60)\n")
    launcher_code = ("import sys; from tuneforge.train.launch import run_forwarding_sigterm; "
                     f"sys.exit(run_forwarding_sigterm([sys.executable, '-c', {script!r}], None))")
    launcher = subprocess.Popen([sys.executable, "-c", launcher_code],
                                env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    try:
        deadline = time.time() + 60
        while not ready.exists() and time.time() < deadline:
            time.sleep(0.1)
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=60) == 143
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert got.read_text() == "TERM"


@pytest.mark.parametrize("error,status,recorded", [
    (KeyboardInterrupt(), "interrupted", "interrupted by SIGINT"),
    (ValueError("bad row"), "failed", "ValueError: bad row"),
])
def test_ctrl_c_is_an_interruption_and_other_errors_a_failure(tmp_path, error, status, recorded):
    from tuneforge.train.launch import supervised_run

    run = RunDir(tmp_path / "r")
    write_json_atomic(run.manifest, {"status": "running"})
    with pytest.raises(type(error)), supervised_run(run, {"train_s": 1.0}):
        raise error
    manifest = run.read_manifest()
    assert (manifest["status"], manifest["error"]) == (status, recorded)
    assert manifest["finished_at"] and manifest["timings"] == {"train_s": 1.0}


def test_runs_ls_and_show_read_a_killed_run_as_interrupted(tmp_path):
    # SIGKILL (OOM killer, a lost node) leaves the manifest saying `running`; the listing must not.
    runs = tmp_path / "runs"
    run = RunDir(runs / "killed")
    run.path.mkdir(parents=True)
    pid, here = _dead_pid(), socket.gethostname()
    write_json_atomic(run.manifest, {"status": "running", "pid": pid, "host": here, "started_at": "2026-01-01"})
    write_json_atomic(run.heartbeat, {"pid": pid, "host": here, "at": time.time() - 1})
    listing = _wide_cli("runs", "ls", "--runs-dir", str(runs))
    assert listing.exit_code == 0 and "│ killed │ interrupted │" in listing.output, listing.output
    shown = _wide_cli("runs", "show", "killed", "--runs-dir", str(runs))
    out = " ".join(shown.output.split())
    assert "killed (interrupted)" in out and "the manifest says running, but" in out, shown.output
    assert "--resume" in out
