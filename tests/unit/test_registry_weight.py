"""Canary traffic weights in the registry: promote --weight, `registry weight`, weight events, schema 1 upgrade."""
from __future__ import annotations

import json
import sqlite3

import pytest

from tests.registry_helpers import fake_run, invoke
from tuneforge.errors import ConfigError
from tuneforge.registry import RegistryError, Store, follow_state, promote, register, rollback, set_weight


@pytest.fixture()
def store(tmp_path):
    with Store(tmp_path / "registry.db") as store:
        for k in (1, 2, 3):
            register(store, fake_run(tmp_path, f"r{k}", bytes([k]) * 32), "contacts", runs_dir=tmp_path / "runs")
        yield store


def test_promote_with_weight_sets_and_keeps_the_canary_share(store):
    promote(store, "contacts", 1, "production")
    promote(store, "contacts", 2, "canary", weight=0.1)
    assert follow_state(store, "contacts")[1] == {"canary": (2, 0.1), "production": (1, None)}
    promote(store, "contacts", 3, "canary")                   # a move without --weight keeps the share
    assert follow_state(store, "contacts")[1]["canary"] == (3, 0.1)
    assert rollback(store, "contacts", "canary").to_version == 2
    assert follow_state(store, "contacts")[1]["canary"] == (2, 0.1)
    same = promote(store, "contacts", 2, "canary", weight=0.25)  # same target, new weight: a weight event
    assert not same.moved and same.event_id is not None
    events = [(e.action, e.to_version, e.weight) for e in store.events("contacts", "canary")]
    assert events == [("promote", 2, 0.1), ("promote", 3, None), ("rollback", 2, None), ("weight", 2, 0.25)]
    # weight events never enter the alias stack: a rollback still goes back to the version before v2
    with pytest.raises(RegistryError, match="no earlier target"):
        rollback(store, "contacts", "canary")


def test_set_weight_records_reason_and_refuses_bad_values(store):
    with pytest.raises(RegistryError, match="no alias 'canary'"):
        set_weight(store, "contacts", "canary", 0.0)
    promote(store, "contacts", 2, "canary", weight=0.5)
    before, _ = follow_state(store, "contacts")
    event = set_weight(store, "contacts", "canary", 0.0, actor="bot", reason="auto-rollback: errors")
    assert (event.action, event.weight, event.actor, event.reason) == ("weight", 0.0, "bot", "auto-rollback: errors")
    after, state = follow_state(store, "contacts")
    assert after > before and state["canary"] == (2, 0.0)
    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigError, match="from 0 to 1"):
            set_weight(store, "contacts", "canary", bad)


def test_cli_promote_weight_and_history(store):
    db = store.path
    result = invoke("registry", "promote", "contacts", "2", "--to", "canary", "--weight", "0.1", "--db", db)
    assert result.exit_code == 0 and "contacts@canary: none -> v2 at weight 0.1" in result.output, result.output
    result = invoke("registry", "weight", "contacts", "canary", "0", "--reason", "enough", "--db", db)
    assert result.exit_code == 0 and "weight 0" in result.output, result.output
    history = json.loads(invoke("registry", "history", "contacts", "--alias", "canary", "--json", "--db", db).output)
    assert [(e["action"], e["weight"], e["reason"]) for e in history] == [("promote", 0.1, None),
                                                                         ("weight", 0.0, "enough")]
    assert invoke("registry", "promote", "contacts", "2", "--to", "canary", "--weight", "2", "--db", db).exit_code == 2


def test_a_schema_1_database_gains_the_weight_columns_in_place(tmp_path):
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE aliases (model TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL,
            event_id INTEGER NOT NULL, moved_at TEXT NOT NULL, PRIMARY KEY (model, alias));
        CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, alias TEXT,
            action TEXT NOT NULL, from_version INTEGER, to_version INTEGER, actor TEXT, at TEXT NOT NULL,
            reason TEXT, gates TEXT);
        INSERT INTO events (model, alias, action, to_version, at) VALUES ('m', 'production', 'promote', 1, 'then');
        INSERT INTO aliases VALUES ('m', 'production', 1, 1, 'then');
        PRAGMA user_version = 1;
    """)
    conn.close()
    with Store(db) as store:
        assert store.events("m")[0].weight is None
        assert follow_state(store, "m")[1] == {"production": (1, None)}
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == 2
