"""The registry's database: versions of named models, aliases that point at them, and every alias move.

One SQLite file (stdlib sqlite3) in WAL mode, so readers (a server polling an alias) never block a writer and a
writer never blocks them. Every change runs in one `BEGIN IMMEDIATE` transaction: the write lock is taken before
the current state is read, so two processes promoting at once are serialised (the second waits, then reads the
first one's move) and no alias move is lost; a crash mid-transaction leaves the previous state.

Tables::

    versions(id, model, version, content_hash, kind, run_dir, artifacts, base, lineage, results,
             registered_by, registered_at, note, deprecated_at, deprecated_by, deprecated_reason)
    aliases(model, alias, version, event_id, moved_at, weight)
                                                              -- where each alias points now; weight: the share
                                                                 of traffic a server routes to it (canary)
    events(id, model, alias, action, from_version, to_version, actor, at, reason, gates, weight)
                                                              -- append-only: register, promote, refused,
                                                                 rollback, deprecate, weight

`events.id` only grows, so `last_event_id()` is a cheap "has anything moved?" check for a poller.
"""
from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import ConfigError, TuneforgeError

SCHEMA_VERSION = 2
ENV_DB = "TUNEFORGE_REGISTRY"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_VERSION = re.compile(r"^v?(\d+)$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    run_dir TEXT,
    artifacts TEXT NOT NULL,
    base TEXT,
    lineage TEXT NOT NULL,
    results TEXT,
    registered_by TEXT,
    registered_at TEXT NOT NULL,
    note TEXT,
    deprecated_at TEXT,
    deprecated_by TEXT,
    deprecated_reason TEXT,
    UNIQUE (model, version),
    UNIQUE (model, content_hash)
);
CREATE TABLE IF NOT EXISTS aliases (
    model TEXT NOT NULL,
    alias TEXT NOT NULL,
    version INTEGER NOT NULL,
    event_id INTEGER NOT NULL,
    moved_at TEXT NOT NULL,
    weight REAL,
    PRIMARY KEY (model, alias)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    alias TEXT,
    action TEXT NOT NULL,
    from_version INTEGER,
    to_version INTEGER,
    actor TEXT,
    at TEXT NOT NULL,
    reason TEXT,
    gates TEXT,
    weight REAL
);
CREATE INDEX IF NOT EXISTS events_by_alias ON events (model, alias, id);
"""


class RegistryError(TuneforgeError):
    """A registry operation cannot be done (unknown model/version/alias, refused move, unusable database)."""


def default_db_path(runs_dir: str | Path = "runs") -> Path:
    """$TUNEFORGE_REGISTRY, else `registry.db` next to the runs folder (so deleting runs/ keeps the registry)."""
    if os.environ.get(ENV_DB):
        return Path(os.environ[ENV_DB]).expanduser()
    return Path(runs_dir).expanduser().resolve().parent / "registry.db"


def current_user() -> str:
    try:
        return os.environ.get("TUNEFORGE_USER") or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def now_iso() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise ConfigError(f"model name {name!r}: use letters, digits, '-', '_' and '.' (start with a letter or digit)")
    return name


def check_alias(alias: str) -> str:
    if not _ALIAS.match(alias or "") or _VERSION.match(alias):
        raise ConfigError(f"alias {alias!r}: start with a letter, then letters, digits, '-', '_' or '.'; "
                          "'v3' or '3' would read as a version number")
    return alias


def parse_version(text: str | int) -> int | None:
    """3, '3' or 'v3' -> 3; anything else (an alias) -> None."""
    if isinstance(text, int):
        return text
    match = _VERSION.match(str(text).strip())
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Version:
    model: str
    version: int
    content_hash: str
    kind: str                  # "adapter" or "merged"
    run_dir: str | None
    artifacts: dict            # {"adapter": path?, "merged": path?, "gguf": [{path, sha256}], "files": {...}}
    base: dict                 # {"source", "weights_sha256"}
    lineage: dict
    results: dict | None
    registered_by: str | None
    registered_at: str
    note: str | None
    deprecated_at: str | None = None
    deprecated_by: str | None = None
    deprecated_reason: str | None = None

    @property
    def label(self) -> str:
        return f"{self.model} v{self.version}"

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Version:
        def load(key):
            return json.loads(row[key]) if row[key] is not None else None

        return cls(model=row["model"], version=row["version"], content_hash=row["content_hash"], kind=row["kind"],
                   run_dir=row["run_dir"], artifacts=load("artifacts") or {}, base=load("base") or {},
                   lineage=load("lineage") or {}, results=load("results"), registered_by=row["registered_by"],
                   registered_at=row["registered_at"], note=row["note"], deprecated_at=row["deprecated_at"],
                   deprecated_by=row["deprecated_by"], deprecated_reason=row["deprecated_reason"])


@dataclass(frozen=True)
class Event:
    id: int
    model: str
    alias: str | None
    action: str                # register | promote | refused | rollback | deprecate | weight
    from_version: int | None
    to_version: int | None
    actor: str | None
    at: str
    reason: str | None
    gates: list | None
    weight: float | None = None  # promote/weight: the alias's traffic share set by this event

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Event:
        return cls(id=row["id"], model=row["model"], alias=row["alias"], action=row["action"],
                   from_version=row["from_version"], to_version=row["to_version"], actor=row["actor"], at=row["at"],
                   reason=row["reason"], gates=json.loads(row["gates"]) if row["gates"] else None,
                   weight=row["weight"])

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class Store:
    """A connection to one registry database. Cheap to open; use one per thread/process."""

    def __init__(self, path: str | Path, *, create: bool = True, timeout: float = 60.0):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise RegistryError(f"no registry database at {self.path}",
                                hint="register a run first (`tuneforge registry register RUN --name NAME`) "
                                     "or pass --db / set $TUNEFORGE_REGISTRY")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: no implicit transactions; every write below opens BEGIN IMMEDIATE itself.
            self.conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self.conn.execute("PRAGMA journal_mode = WAL")
            if self.conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                with self.write():
                    for statement in filter(str.strip, _SCHEMA.split(";")):
                        self.conn.execute(statement)
                    # Schema 1 databases lack the traffic weight: add it in place (existing rows read NULL).
                    for table in ("aliases", "events"):
                        columns = {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}
                        if "weight" not in columns:
                            self.conn.execute(f"ALTER TABLE {table} ADD COLUMN weight REAL")
                    self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise RegistryError(f"{self.path}: not a usable registry database ({exc})") from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; the lock is taken up front so read-then-write sequences are serialised."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ------------------------------------------------------------------------------------------- reads
    def models(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT DISTINCT model FROM versions ORDER BY model")]

    def versions(self, model: str) -> list[Version]:
        rows = self.conn.execute("SELECT * FROM versions WHERE model = ? ORDER BY version", (model,)).fetchall()
        return [Version.from_row(r) for r in rows]

    def version(self, model: str, version: int) -> Version:
        row = self.conn.execute("SELECT * FROM versions WHERE model = ? AND version = ?", (model, version)).fetchone()
        if row is None:
            known = [v.version for v in self.versions(model)]
            raise RegistryError(f"{model} has no version {version}" if known else f"no model named {model!r} in "
                                f"the registry {self.path}",
                                hint=f"versions: {', '.join(f'v{k}' for k in known)}" if known
                                else "`tuneforge registry ls` lists the models")
        return Version.from_row(row)

    def aliases(self, model: str) -> dict[str, int]:
        return {r["alias"]: r["version"] for r in
                self.conn.execute("SELECT alias, version FROM aliases WHERE model = ? ORDER BY alias", (model,))}

    def alias_weights(self, model: str) -> dict[str, float | None]:
        """{alias: traffic weight} (None: never set) of a model's aliases."""
        return {r["alias"]: r["weight"] for r in
                self.conn.execute("SELECT alias, weight FROM aliases WHERE model = ? ORDER BY alias", (model,))}

    def alias_target(self, model: str, alias: str) -> int | None:
        row = self.conn.execute("SELECT version FROM aliases WHERE model = ? AND alias = ?", (model, alias)).fetchone()
        return row[0] if row else None

    def lookup(self, model: str, ref: str | int) -> Version:
        """A version by number ('3', 'v3') or by alias ('production')."""
        number = parse_version(ref)
        if number is None:
            number = self.alias_target(model, str(ref))
            if number is None:
                aliases = self.aliases(model)
                raise RegistryError(f"{model} has no alias {ref!r}",
                                    hint=f"aliases: {', '.join(f'{a} -> v{v}' for a, v in aliases.items())}"
                                    if aliases else f"promote a version first: tuneforge registry promote {model} "
                                                    f"VERSION --to {ref}")
        return self.version(model, number)

    def events(self, model: str, alias: str | None = None, since: int = 0) -> list[Event]:
        """Events of `model` (one alias's when given) with id > `since`, oldest first."""
        query, args = "SELECT * FROM events WHERE model = ? AND id > ?", [model, since]
        if alias is not None:
            query, args = query + " AND alias = ?", args + [alias]
        return [Event.from_row(r) for r in self.conn.execute(query + " ORDER BY id", args)]

    def last_event_id(self) -> int:
        return self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]

    # ------------------------------------------------------------------------------------------- writes
    def add_event(self, conn: sqlite3.Connection, model: str, action: str, *, alias: str | None = None,
                  from_version: int | None = None, to_version: int | None = None, actor: str | None = None,
                  reason: str | None = None, gates: list | None = None, weight: float | None = None) -> int:
        cursor = conn.execute(
            "INSERT INTO events (model, alias, action, from_version, to_version, actor, at, reason, gates, weight) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (model, alias, action, from_version, to_version, actor or current_user(), now_iso(), reason,
             json.dumps(gates) if gates is not None else None, weight))
        return cursor.lastrowid

    def move_alias(self, conn: sqlite3.Connection, model: str, alias: str, version: int, event_id: int,
                   weight: float | None = None) -> None:
        """Point the alias at `version`; its traffic weight changes only when one is given."""
        conn.execute("INSERT INTO aliases (model, alias, version, event_id, moved_at, weight) "
                     "VALUES (?, ?, ?, ?, ?, ?) "
                     "ON CONFLICT (model, alias) DO UPDATE SET version = excluded.version, "
                     "event_id = excluded.event_id, moved_at = excluded.moved_at, "
                     "weight = COALESCE(excluded.weight, aliases.weight)",
                     (model, alias, version, event_id, now_iso(), weight))

    def integrity(self) -> str:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]
