"""Replicas sharing one server database (`database_url`): keys, daily usage, the request log, feedback and the
rate-limit buckets, against a real throwaway PostgreSQL (tests/pg.py); plus the embedded SQLite file's guarantees
(in-place migration of older files, WAL, no committed row lost when the process is killed) and clear errors for
bad database URLs."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading

import openai
import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.pg import pg_cluster, pg_url  # noqa: F401  (fixtures)
from tuneforge.errors import TuneforgeError
from tuneforge.serve.db.limits import RateLimiter, SharedRateLimiter, limiter_for
from tuneforge.serve.db.store import Store, export_feedback, load_cipher


@pytest.fixture()
def replicas(pg_url):  # noqa: F811
    """Two stores on one PostgreSQL database: what two servers behind a load balancer hold."""
    one, two = Store(pg_url), Store(pg_url)
    yield one, two
    one.close()
    two.close()


def raw_rows(url: str, sql: str) -> list[tuple]:
    """Read the database with psycopg directly (not through the store)."""
    parsed = make_url(url)
    with psycopg.connect(host=parsed.host, port=parsed.port, user=parsed.username, dbname=parsed.database) as conn:
        return conn.execute(sql).fetchall()


def test_a_key_created_on_one_replica_is_looked_up_and_revoked_on_the_other(replicas):
    one, two = replicas
    assert one.shared and two.shared and one.path is None
    key, secret = one.create_key("tenant", models=["a", "b"], rpm=5, tpm=100, daily_tokens=1000)
    seen = two.lookup(secret)
    assert seen == key and seen.models == ("a", "b") and (seen.rpm, seen.tpm, seen.daily_tokens) == (5, 100, 1000)
    assert [k.id for k in two.list_keys()] == [key.id]
    assert two.revoke(key.id) and not one.revoke(key.id)  # revoked once, by whichever replica
    assert one.lookup(secret) is None and one.get_key(key.id).revoked is not None


def test_daily_usage_adds_up_across_replicas_and_survives_a_reopen(replicas, pg_url):  # noqa: F811
    one, two = replicas
    key, _ = one.create_key("quota", daily_tokens=100)
    one.add_tokens(key.id, 7)
    two.add_tokens(key.id, 5)
    one.add_tokens(key.id, 3)
    assert one.tokens_today(key.id) == two.tokens_today(key.id) == 15
    with Store(pg_url) as restarted:
        assert restarted.tokens_today(key.id) == 15


def test_request_log_and_feedback_of_both_replicas_read_back_and_stay_encrypted(pg_url, tmp_path):  # noqa: F811
    cipher = load_cipher(tmp_path / "log.key", create=True)
    one, two = Store(pg_url, cipher), Store(pg_url, cipher)
    one.log_request(id="r1", status=200, model="m", prompt=json.dumps([{"role": "user", "content": "secret one"}]),
                    response="answer one", guardrails=["pii"], prompt_tokens=3, latency_s=0.25, version=2, arm="canary")
    two.log_request(id="r2", status=200, model="m", prompt=json.dumps([{"role": "user", "content": "secret two"}]),
                    response="answer two", mean_logprob=-0.5, low_confidence=1)
    first = two.add_feedback("r1", None, rating=1, correction="better one", preferred=None, comment=None)
    second = one.add_feedback("r2", None, rating=-1, correction=None, preferred="preferred two", comment="meh")
    assert second > first
    for store in (one, two):
        assert [r["id"] for r in store.requests()] == ["r1", "r2"]
        assert store.request("r1")["response"] == "answer one" and store.request("r1")["guardrails"] == '["pii"]'
        assert store.request("r2")["mean_logprob"] == -0.5 and store.request("r2")["low_confidence"] == 1
        assert [(f["response_id"], f["rating"], f["response"]) for f in store.feedback()] == [
            ("r1", 1, "answer one"), ("r2", -1, "answer two")]
    chat, pairs = export_feedback(two)
    assert chat[0]["messages"][-1]["content"] == "better one" and pairs[0]["rejected"][0]["content"] == "answer two"
    assert [(r["id"], r["rating"]) for r in one.version_rows("m")] == [("r1", 1)]
    stored = raw_rows(pg_url, "SELECT prompt, response FROM requests")
    assert all(value.startswith("enc:") and "secret" not in value and "answer" not in value
               for row in stored for value in row)
    with Store(pg_url) as keyless:
        assert keyless.request("r2")["response"].startswith("enc:")
    with Store(pg_url, load_cipher(tmp_path / "other.key", create=True)) as wrong:
        with pytest.raises(TuneforgeError, match="encrypted with another key") as info:
            wrong.request("r1")
        assert "127.0.0.1" in str(info.value)
    one.close()
    two.close()


def test_a_requests_per_minute_limit_holds_across_two_replicas(replicas):
    one, two = replicas
    assert isinstance(limiter_for(one), SharedRateLimiter)
    limiters = [SharedRateLimiter(one), SharedRateLimiter(two)]
    for i in range(5):  # N = 5 requests spread over both replicas pass
        decision = limiters[i % 2].take("key_a", 5, None, 0)
        assert decision.allowed and decision.headers["x-ratelimit-remaining-requests"] == str(4 - i)
    refused = limiters[1].take("key_a", 5, None, 0)  # the N+1th is refused, on whichever replica
    assert not refused.allowed and refused.retry_after >= 1 and "requests per minute" in refused.reason
    assert refused.headers["x-ratelimit-limit-requests"] == "5"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert float(refused.headers["x-ratelimit-reset-requests"].rstrip("s")) > 50
    assert limiters[0].take("key_b", 5, None, 0).allowed  # another key has its own bucket


def test_tokens_per_minute_and_refunds_are_shared_too(replicas):
    one, two = replicas
    a, b = SharedRateLimiter(one), SharedRateLimiter(two)
    assert a.take("k", None, 100, 60).allowed
    short = b.take("k", None, 100, 60)  # the other replica sees the 40 left: nothing charged
    assert not short.allowed and "tokens" in short.reason and short.headers["x-ratelimit-remaining-tokens"] == "40"
    b.refund("k", 50)  # the first request used 10 of its 60
    assert a.take("k", None, 100, 60).allowed
    b.refund("never-seen", 10)  # a refund creates no bucket
    assert not a.take("k2", None, 10, 11).allowed  # larger than a minute's budget: refused outright


def test_concurrent_writers_on_two_replicas_lose_no_row_and_no_charge(replicas):
    one, two = replicas
    limiters = [SharedRateLimiter(one), SharedRateLimiter(two)]
    key, _ = one.create_key("busy")
    allowed, errors = [], []

    def work(t: int) -> None:
        store, limiter = (one, limiters[0]) if t % 2 else (two, limiters[1])
        try:
            for i in range(25):
                store.log_request(id=f"t{t}-{i}", status=200, model="m")
                store.add_tokens(key.id, 1)
                if limiter.take(key.id, 120, None, 0).allowed:
                    allowed.append(1)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert {r["id"] for r in one.requests()} == {f"t{t}-{i}" for t in range(8) for i in range(25)}
    assert two.tokens_today(key.id) == 200
    # 200 takes against a 120 rpm bucket: exactly 120 pass, plus what refilled while they ran (2 per second)
    assert 120 <= len(allowed) < 140


def test_two_servers_on_one_database_share_keys_limits_and_the_log(pg_url, tmp_path):  # noqa: F811
    from tests.serve_helpers import running_server, tiny_base
    from tuneforge.serve.config import ServeConfig

    base = str(tiny_base(tmp_path / "base"))
    configs = [ServeConfig(base=base, base_name="tiny", state_dir=str(tmp_path / f"state{i}"), database_url=pg_url,
                           batching={"window_ms": 1}) for i in (1, 2)]
    with running_server(configs[0]) as (url1, admin, app1), running_server(configs[1]) as (url2, admin2, app2):
        assert admin and admin2 is None  # the second replica found the first one's admin key in the database
        assert not (tmp_path / "state1" / "serve.db").exists()
        key, secret = app1.state.tuneforge.store.create_key("client", rpm=3)
        clients = [openai.OpenAI(base_url=u + "/v1", api_key=secret, max_retries=0) for u in (url1, url2)]

        def ask(c):
            return c.chat.completions.with_raw_response.create(
                model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2, temperature=0)

        remaining = [ask(clients[i % 2]).headers["x-ratelimit-remaining-requests"] for i in range(3)]
        assert remaining == ["2", "1", "0"]
        for c in clients:  # the fourth request is refused on either replica
            with pytest.raises(openai.RateLimitError) as info:
                ask(c)
            assert int(info.value.response.headers["retry-after"]) >= 1
        rows = app2.state.tuneforge.store.requests()
        assert [r["status"] for r in rows if r["key_id"] == key.id] == [200, 200, 200, 429, 429]
        app2.state.tuneforge.store.revoke(key.id)
        with pytest.raises(openai.AuthenticationError):
            clients[0].models.list()


def test_serve_cli_commands_take_the_database_url(pg_url, tmp_path):  # noqa: F811
    from typer.testing import CliRunner

    from tuneforge.cli.main import app

    config = tmp_path / "serve.yaml"
    config.write_text(f"base: tiny\nstate_dir: state\ndatabase_url: {pg_url}\n")
    runner = CliRunner()
    created = runner.invoke(app, ["serve", "keys", "create", str(config), "--name", "ops", "--rpm", "7"])
    assert created.exit_code == 0, created.output
    key_id = created.output.split()[1]
    with Store(pg_url) as store:
        assert store.get_key(key_id).rpm == 7
        store.log_request(id="r1", status=200, prompt=json.dumps("tell me about penguins"), response="no")
        store.add_feedback("r1", None, rating=1, correction="penguins are birds", preferred=None, comment=None)
    other = tmp_path / "other.yaml"  # no database_url in this config: the option says where
    other.write_text("base: tiny\nstate_dir: state\n")
    listed = runner.invoke(app, ["serve", "keys", "list", str(other), "--database-url", pg_url])
    assert listed.exit_code == 0 and key_id in listed.output and "rpm=7" in listed.output, listed.output
    exported = runner.invoke(app, ["serve", "feedback", "export", str(config), "--out", str(tmp_path / "fb")])
    assert exported.exit_code == 0 and "chat.jsonl: 1 rows" in exported.output, exported.output
    revoked = runner.invoke(app, ["serve", "keys", "revoke", str(config), key_id])
    assert revoked.exit_code == 0 and f"revoked {key_id}" in revoked.output
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"messages": [{"role": "user", "content": "tell me about penguins"},
                                              {"role": "assistant", "content": "birds"}]}) + "\n")
    for log in (pg_url, str(config)):
        drift = runner.invoke(app, ["monitor", "drift", "--log", log, "--train", str(train), "--out",
                                    str(tmp_path / "drift"), "--embedding-model", "none"])
        assert drift.exit_code in (0, 1) and "report:" in drift.output, drift.output


def test_a_bad_or_unreachable_database_url_is_a_clear_error_without_the_password(tmp_path):
    from typer.testing import CliRunner

    from tests.pg import _free_port
    from tuneforge.cli.main import app
    from tuneforge.errors import ConfigError
    from tuneforge.serve.config import ServeConfig

    url = f"postgresql://ops:hunter2@127.0.0.1:{_free_port()}/serve"  # nothing listens there
    with pytest.raises(TuneforgeError, match="cannot open the server database") as info:
        Store(url)
    assert "ops:***@127.0.0.1" in str(info.value) and "hunter2" not in str(info.value)
    with pytest.raises(TuneforgeError, match="SQLite or PostgreSQL") as info:
        Store("mysql://ops:hunter2@db/serve")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ValueError, match="not a database URL"):
        ServeConfig(base="tiny", database_url="ops:hunter2@somewhere")
    config = tmp_path / "serve.yaml"
    config.write_text("base: tiny\ndatabase_url: 'redis://ops:hunter2@db'\n")
    with pytest.raises(ConfigError, match="serve.yaml:2: database_url: Value error, not a database URL") as info:
        from tuneforge.serve.config import load_serve_config

        load_serve_config(config)
    assert "hunter2" not in str(info.value)
    config.write_text("base: tiny\nstate_dir: state\n")
    result = CliRunner().invoke(app, ["serve", "keys", "list", str(config), "--database-url", url])
    assert result.exit_code != 0 and "cannot open the server database" in result.output, result.output
    assert "hunter2" not in result.output and "Traceback" not in result.output


def test_an_older_sqlite_database_is_migrated_in_place_and_stays_wal(tmp_path):
    path = tmp_path / "serve.db"
    old = sqlite3.connect(path)  # the first release's tables: no version/arm/confidence columns, no buckets
    old.executescript("""
        CREATE TABLE keys (id TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,
          admin INTEGER NOT NULL DEFAULT 0, models TEXT, rpm INTEGER, tpm INTEGER, daily_tokens INTEGER,
          created REAL NOT NULL, revoked REAL);
        CREATE TABLE usage (key_id TEXT NOT NULL, day TEXT NOT NULL, tokens INTEGER NOT NULL,
          PRIMARY KEY (key_id, day));
        CREATE TABLE requests (id TEXT PRIMARY KEY, created REAL NOT NULL, key_id TEXT, model TEXT, adapter TEXT,
          route TEXT, status INTEGER, prompt TEXT, response TEXT, prompt_tokens INTEGER, completion_tokens INTEGER,
          latency_s REAL, queue_s REAL, ttft_s REAL, finish_reason TEXT, guardrails TEXT, error TEXT);
        CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, response_id TEXT NOT NULL, created REAL NOT NULL,
          key_id TEXT, rating INTEGER, correction TEXT, preferred TEXT, comment TEXT);
        INSERT INTO requests (id, created, status, prompt) VALUES ('old', 1.0, 200, '"hi"');
    """)
    old.commit()
    old.close()
    with Store(path) as store:
        assert not store.shared and type(limiter_for(store)) is RateLimiter
        store.log_request(id="new", status=200, model="m", version=3, arm="production", low_confidence=0)
        assert [(r["id"], r["version"]) for r in store.requests()] == [("old", None), ("new", 3)]
        assert store.version_rows("m") == [{"id": "new", "version": 3, "arm": "production", "status": 200,
                                            "latency_s": None, "guardrails": None, "low_confidence": 0,
                                            "rating": None}]
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {r[1] for r in check.execute("PRAGMA table_info(requests)")} >= {"version", "arm", "mean_logprob",
                                                                             "low_confidence"}
    check.close()


KILLED_WRITER = """
import sys
from tuneforge.serve.db.store import Store
store = Store(sys.argv[1])
for i in range(100000):
    store.log_request(id=f"r{i}", status=200, prompt="x" * 200)
    print(i, flush=True)
"""


def test_a_killed_sqlite_server_loses_no_committed_row(tmp_path):
    path = tmp_path / "serve.db"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    for line in writer.stdout:
        if int(line) >= 200:
            break
    writer.kill()  # SIGKILL mid-write: rows reported committed must all be there
    writer.wait(30)
    committed = int(line)
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    check.close()
    with Store(path) as store:
        ids = {r["id"] for r in store.requests()}
    assert {f"r{i}" for i in range(committed + 1)} <= ids


def test_a_sqlite_database_url_shares_limits_between_stores_too(tmp_path):
    """database_url may name a SQLite file (replicas on one machine): the buckets then live in it, each take is a
    BEGIN IMMEDIATE transaction."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with Store(url) as one, Store(url) as two:
        assert one.shared and one.path == tmp_path / "shared.db"
        limiters = [limiter_for(one), limiter_for(two)]
        assert all(isinstance(limiter, SharedRateLimiter) for limiter in limiters)
        allowed = []
        threads = [threading.Thread(target=lambda i=i: allowed.extend(
            limiters[i % 2].take("k", 30, None, 0).allowed for _ in range(10))) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert 30 <= sum(allowed) < 36 and len(allowed) == 60
        key, secret = one.create_key("k")
        assert two.lookup(secret) == key


def test_a_replica_whose_clock_is_behind_neither_drains_a_bucket_nor_moves_its_time_back():
    from tuneforge.serve.db.limits import Bucket

    bucket = Bucket(60.0, 10.0, 1000.0)
    bucket.refill(995.0)  # another replica's wall clock, 5 s behind the last writer's
    assert (bucket.level, bucket.stamp) == (10.0, 1000.0)
    bucket.refill(1002.0)
    assert (bucket.level, bucket.stamp) == (12.0, 1002.0)


def test_the_postgres_fixture_fails_clearly_when_no_binaries_are_installed(monkeypatch):
    import tests.pg as pg

    monkeypatch.setattr(pg.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(pg.shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="no PostgreSQL binaries.*dev.py setup"):
        pg.postgres_bin()
