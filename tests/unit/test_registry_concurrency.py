"""Two real processes promoting and rolling back the same alias at once: the database stays intact and no alias
move is lost (every move starts from where the previous one left the alias)."""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time

from tests.registry_helpers import fake_run
from tuneforge.registry import Store, register
from tuneforge.registry.release import alias_stack

WORKER = r"""
import sys, time
from pathlib import Path
from tuneforge.registry import Store, promote, rollback, RegistryError

db, worker, n, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
while not start.exists():
    time.sleep(0.001)
moves = 0
with Store(db, timeout=60) as store:
    for i in range(n):
        if i % 5 == 4:
            try:
                rollback(store, "contacts", "production", actor=f"w{worker}")
                moves += 1
            except RegistryError:
                pass
        else:
            result = promote(store, "contacts", 1 + (i * 2 + worker) % 3, "production", actor=f"w{worker}",
                             reason=f"w{worker}-{i}")
            moves += result.moved
print(moves)
"""


def test_two_processes_promoting_at_once_lose_nothing(tmp_path):
    db = tmp_path / "registry.db"
    with Store(db) as store:
        for k in range(3):
            register(store, fake_run(tmp_path, f"run{k}", bytes([k]) * 64), "contacts", runs_dir=tmp_path / "runs")
    start = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    n = 40
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(db), str(w), str(n), str(start)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for w in (0, 1)]
    time.sleep(0.5)  # both interpreters are up and waiting on the start file
    start.touch()
    outputs = [w.communicate(timeout=240) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err
    moves_reported = sum(int(out.strip()) for out, _ in outputs)

    with Store(db) as store:
        assert store.integrity() == "ok"
        events = [e for e in store.events("contacts", "production") if e.action in ("promote", "rollback")]
        # every move a worker made is in the history, from both workers
        assert len(events) == moves_reported and moves_reported > n // 2
        assert {e.actor for e in events} == {"w0", "w1"}
        # no lost update: each move starts where the previous one left the alias
        for before, after in itertools.pairwise(events):
            assert after.from_version == before.to_version
        assert store.alias_target("contacts", "production") == events[-1].to_version == alias_stack(events)[-1]
        assert [r[0] for r in store.conn.execute("PRAGMA journal_mode")] == ["wal"]
