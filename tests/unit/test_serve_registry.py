"""The server follows registry aliases: promote and rollback reach it without a restart or a failed request, a
weighted canary is routed per user, every response names its version, and a failing canary is rolled back."""
from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from tests.registry_helpers import invoke
from tests.serve_helpers import adapter_run, running_server, tiny_base
from tuneforge.registry import Store, promote, register, rollback
from tuneforge.serve.config import ServeConfig
from tuneforge.serve.follow import Route, Target, bucket

POLL_S = 0.2
DELAY_S = 3.0  # the stated bound: a move reaches the server within one poll plus an adapter load


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-registry")
    base = tiny_base(root / "base")
    db = root / "registry.db"
    with Store(db) as store:
        for k in (1, 2, 3):
            version, created = register(store, adapter_run(root, f"r{k}", k, base), "contacts",
                                        runs_dir=root / "runs")
            assert created and version.version == k
    return root, base, db


def config(root, base, db, state: str, **adapter) -> ServeConfig:
    return ServeConfig(base=str(base), base_name="tiny", state_dir=str(root / state), registry_db=str(db),
                       registry_poll_s=POLL_S, batching={"window_ms": 5},
                       adapters=[{"name": "contacts", "path": "registry:contacts@production", **adapter}])


def ask(url, key, user=None, model="contacts"):
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hello there"}], max_tokens=3, temperature=0, user=user)
    return raw.headers, raw.parse()


def test_promote_and_rollback_reach_a_running_server_while_a_client_loops(registry):
    root, base, db = registry
    with Store(db) as store:
        promote(store, "contacts", 1, "production")
    with running_server(config(root, base, db, "state-follow")) as (url, admin, app):
        _, key = app.state.tuneforge.store.create_key("client")
        # Each version answers differently (different random adapters): pinned answers identify them by text too.
        pinned = {v: ask(url, key, model=f"contacts@v{v}")[1].choices[0].message.content for v in (1, 2)}
        assert pinned[1] != pinned[2]
        results, stop = [], threading.Event()

        def loop():
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    headers, chat = ask(url, key)
                    results.append((sent, time.monotonic(), int(headers["x-tuneforge-model-version"]),
                                    chat.system_fingerprint, chat.choices[0].message.content))
                except Exception as exc:  # noqa: BLE001 - recorded: the test asserts there are none
                    results.append((sent, time.monotonic(), exc, None, None))

        client = threading.Thread(target=loop)
        client.start()
        try:
            time.sleep(1.0)
            with Store(db) as store:
                promote(store, "contacts", 2, "production")
            promoted = time.monotonic()
            time.sleep(DELAY_S + 1.0)
            with Store(db) as store:
                rollback(store, "contacts", "production", reason="test")
            rolled_back = time.monotonic()
            time.sleep(DELAY_S + 1.0)
        finally:
            stop.set()
            client.join(timeout=60)
        failures = [r for r in results if isinstance(r[2], Exception)]
        assert not failures, failures[:3]
        assert len(results) >= 10
        for sent, received, version, fingerprint, text in results:
            assert fingerprint == f"contacts@v{version}" and text == pinned[version]
            if received < promoted or rolled_back + DELAY_S < sent:
                assert version == 1
            elif promoted + DELAY_S < sent and received < rolled_back:
                assert version == 2
        assert any(r[2] == 2 for r in results) and results[-1][2] == 1
        switched = min(r[1] for r in results if r[2] == 2)
        print(f"first v2 answer received {switched - promoted:.2f} s after the promote (poll {POLL_S} s)")
        logged = {row["version"] for row in app.state.tuneforge.store.requests() if row["model"] == "contacts"}
        assert logged == {1, 2}
        metrics = httpx.get(url + "/metrics", headers={"authorization": f"Bearer {admin}"}).text
        assert 'tuneforge_requests_total{model="contacts",route="/v1/chat/completions",status="200",version="2"}' \
            in metrics
        assert 'tuneforge_served_version{arm="production",model="contacts"} 1.0' in metrics
        assert [m.id for m in openai.OpenAI(base_url=url + "/v1", api_key=key).models.list().data] == \
            ["tiny", "contacts"]


def test_canary_split_is_within_three_points_of_the_weight_over_2000_requests():
    route = Route("contacts", "contacts", Target(1, "contacts@v1", "production"), Target(2, "contacts@v2", "canary"),
                  0.1)
    picks = [route.pick(f"req_{i}").arm for i in range(2000)]
    assert abs(picks.count("canary") / 2000 - 0.1) <= 0.03
    assert all(route.pick(f"user{i}") == route.pick(f"user{i}") for i in range(50))
    # A user on the canary at 10% stays on it when the weight grows (the bucket is fixed, the threshold moves).
    wider = Route(**{**route.__dict__, "weight": 0.5})
    assert all(wider.pick(f"req_{i}").arm == "canary" for i in range(2000) if picks[i] == "canary")


def test_weighted_canary_is_sticky_per_user_and_a_failing_canary_is_rolled_back(registry):
    root, base, db = registry
    with Store(db) as store:
        promote(store, "contacts", 1, "production")
        promote(store, "contacts", 3, "canary", weight=0.5)
    rules = {"window_s": 120, "min_requests": 6, "max_error_rate_delta": None, "max_negative_feedback_delta": 0.5}
    with running_server(config(root, base, db, "state-canary", auto_rollback=rules)) as (url, admin, app):
        _, key = app.state.tuneforge.store.create_key("client")
        health = httpx.get(url + "/health").json()
        assert health["registry"]["contacts"] == {"production": 1, "canary": 3, "canary_weight": 0.5}
        users = [f"user{i}" for i in range(16)]
        expected = {u: 3 if bucket("contacts", u) < 0.5 else 1 for u in users}
        assert 4 <= sum(v == 3 for v in expected.values()) <= 12
        rating = {}
        for user in users:
            for _ in range(2):  # sticky: the same user twice gets the same version
                headers, chat = ask(url, key, user=user)
                assert int(headers["x-tuneforge-model-version"]) == expected[user]
                assert headers["x-tuneforge-model-arm"] == ("canary" if expected[user] == 3 else "production")
            rating[chat.id] = -1 if expected[user] == 3 else 1
        # Live comparison before any feedback: both arms, from the server and from its request log.
        shown = invoke("registry", "compare", "contacts", "--live", "--server", url, "--key-file",
                       root / "state-canary" / "admin.key", "--json")
        assert shown.exit_code == 0, shown.output
        live = {row["arm"]: row for row in json.loads(shown.output)["versions"]}
        assert live["canary"]["version"] == 3 and live["production"]["version"] == 1
        assert live["canary"]["requests"] == 2 * sum(v == 3 for v in expected.values())
        assert live["canary"]["requests"] + live["production"]["requests"] == 32
        table = invoke("registry", "compare", "contacts", "--log", root / "state-canary" / "serve.db")
        assert table.exit_code == 0 and "v3" in table.output and "v1" in table.output, table.output
        for response_id, value in rating.items():  # users dislike every canary answer, like production's
            assert httpx.post(url + "/v1/feedback", headers={"authorization": f"Bearer {key}"},
                              json={"response_id": response_id, "rating": value}).status_code == 200
        deadline = time.monotonic() + DELAY_S
        while httpx.get(url + "/health").json()["registry"]["contacts"]["canary"] is not None:
            assert time.monotonic() < deadline, "the failing canary was not rolled back"
            time.sleep(0.1)
        with Store(db) as store:
            event = store.events("contacts", "canary")[-1]
        assert event.action == "weight" and event.weight == 0.0 and event.actor.startswith("tuneforge-serve")
        assert "negative-feedback rate 1.000 vs production 0.000" in event.reason
        for user in users[:6]:
            assert ask(url, key, user=user)[0]["x-tuneforge-model-version"] == "1"
        metrics = httpx.get(url + "/metrics", headers={"authorization": f"Bearer {admin}"}).text
        assert 'tuneforge_auto_rollbacks_total{model="contacts"} 1.0' in metrics
