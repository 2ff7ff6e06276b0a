"""The registry follower without a model: alias moves -> routes, canary weights, refusals, live stats and the
automatic-rollback rule on hand-made request logs."""
from __future__ import annotations

import json
import time
from concurrent.futures import Future

import pytest

from tests.registry_helpers import fake_run
from tuneforge.registry import RegistryError, Store, promote, register, rollback, set_weight
from tuneforge.serve.config import AdapterEntry, AutoRollback
from tuneforge.serve.db.store import Store as RequestLog
from tuneforge.serve.follow import Follower, rollback_reason, version_stats


class FakeServing:
    """The two things the follower asks of the serving engine: run an action on its worker, register an adapter."""

    def __init__(self):
        self.known, self.loads = {}, []

    def control(self, action):
        future = Future()
        future.set_result(action())
        return future

    def register(self, name, path):
        self.known[name] = path
        self.loads.append(name)


@pytest.fixture()
def db(tmp_path):
    path = tmp_path / "registry.db"
    with Store(path) as store:
        for k in (1, 2, 3):
            register(store, fake_run(tmp_path, f"r{k}", bytes([k]) * 32), "contacts", runs_dir=tmp_path / "runs")
        merged = fake_run(tmp_path, "m", b"m" * 32)
        (merged / "merged").mkdir()
        (merged / "merged" / "config.json").write_text("{}")
        (merged / "merged" / "model.safetensors").write_bytes(b"x" * 32)
        register(store, merged, "contacts", runs_dir=tmp_path / "runs", kind="merged")  # v4
        promote(store, "contacts", 1, "production")
    return path


def follower(db, **entry) -> tuple[Follower, FakeServing]:
    serving = FakeServing()
    spec = AdapterEntry(name="contacts", path="registry:contacts@production", **entry)
    return Follower([spec], serving, db=db, poll_s=1.0), serving


def test_moves_become_routes_and_versions_load_once(db, tmp_path):
    f, serving = follower(db)
    f.start()
    try:
        route = f.routes["contacts"]
        assert (route.production.version, route.canary, route.weight) == (1, None, 0.0)
        assert serving.known["contacts@v1"] == str((tmp_path / "runs" / "r1" / "adapter").resolve())
        entry = f.entries[0]
        assert f.sync(entry) is route                     # nothing moved: the same route object, no read of versions
        with Store(db) as store:
            promote(store, "contacts", 2, "production")
            promote(store, "contacts", 3, "canary", weight=0.2)
        route = f.sync(entry)
        assert (route.production.version, route.canary.version, route.weight) == (2, 3, 0.2)
        with Store(db) as store:
            rollback(store, "contacts", "production")
            set_weight(store, "contacts", "canary", 0.0)
        route = f.sync(entry)
        assert (route.production.version, route.canary, route.weight) == (1, None, 0.0)
        assert serving.loads == ["contacts@v1", "contacts@v2", "contacts@v3"]  # v1 was never loaded twice
    finally:
        f.close()


def test_a_merged_version_is_refused_and_the_old_route_stays(db):
    f, _ = follower(db)
    f.start()
    try:
        with Store(db) as store:
            promote(store, "contacts", 4, "production")
        with pytest.raises(RegistryError, match="v4 is a merged model"):
            f.sync(f.entries[0])
        assert f.routes["contacts"].production.version == 1
    finally:
        f.close()
    missing, _ = follower(db, canary_alias=None)
    missing.entries = [AdapterEntry(name="contacts", path="registry:contacts@staging")]
    with pytest.raises(RegistryError, match="no alias 'staging'"):
        missing.start()


def log_rows(store: RequestLog, arm: str, version: int, statuses: list[int], latencies: list[float],
             ratings: list[int | None], guardrails: list[bool] | None = None) -> None:
    for i, (status, latency, rating) in enumerate(zip(statuses, latencies, ratings)):
        rid = f"{arm}-{i}"
        store.log_request(id=rid, model="contacts", status=status, latency_s=latency, version=version, arm=arm,
                          guardrails=json.dumps(["pii"]) if guardrails and guardrails[i] else None)
        if rating is not None:
            store.add_feedback(rid, None, rating=rating, correction=None, preferred=None, comment=None)


def test_version_stats_and_rollback_rules_hand_worked(tmp_path):
    store = RequestLog(tmp_path / "serve.db")
    # production: 10 answers, latencies 0.1..1.0, ratings 5 x +1 and 1 x -1 of 6 rated
    log_rows(store, "production", 1, [200] * 10, [i / 10 for i in range(1, 11)], [1] * 5 + [-1] + [None] * 4)
    # canary: 8 requests, two 500s, one 422 -> error rate 3/8; latencies of the five answered 0.2, 0.4, 0.6, 0.8, 3.0
    log_rows(store, "canary", 2, [200, 500, 200, 422, 200, 500, 200, 200], [0.2, 9, 0.4, 9, 0.6, 9, 0.8, 3.0],
             [-1, None, -1, None, 1, None, None, None], guardrails=[True, False] * 4)
    stats = {s["arm"]: s for s in version_stats(store, "contacts")}
    prod, canary = stats["production"], stats["canary"]
    assert prod["requests"] == 10 and prod["error_rate"] == 0.0
    assert prod["negative_feedback_rate"] == pytest.approx(1 / 6)
    # nearest rank: p50 of 10 values is the 5th (0.5), p95 the 10th (1.0)
    assert (prod["p50_latency_s"], prod["p95_latency_s"]) == (0.5, 1.0)
    assert canary["error_rate"] == pytest.approx(3 / 8) and canary["guardrail_rate"] == 0.5
    assert canary["negative_feedback_rate"] == pytest.approx(2 / 3)
    assert (canary["p50_latency_s"], canary["p95_latency_s"]) == (0.6, 3.0)

    rules = AutoRollback(min_requests=8, max_error_rate_delta=0.4)           # 0.375 - 0 is within 0.4
    assert rollback_reason(canary, prod, rules) is None
    rules = AutoRollback(min_requests=8, max_error_rate_delta=0.3)
    assert "error rate 0.375 vs production 0.000 (margin 0.3) over 8 canary requests" in \
        rollback_reason(canary, prod, rules)
    assert rollback_reason(canary, prod, AutoRollback(min_requests=9, max_error_rate_delta=0.0)) is None
    latency = AutoRollback(min_requests=8, max_error_rate_delta=None, max_p95_latency_ratio=2.5)
    assert "p95 latency 3.000 s > 2.5 x production 1.000 s" in rollback_reason(canary, prod, latency)
    feedback = AutoRollback(min_requests=8, max_error_rate_delta=None, max_negative_feedback_delta=0.4)
    assert "negative-feedback rate 0.667 vs production 0.167" in rollback_reason(canary, prod, feedback)
    # a window: rows older than it are left out
    assert version_stats(store, "contacts", window_s=60, now=time.time() + 3600) == []
    store.close()
