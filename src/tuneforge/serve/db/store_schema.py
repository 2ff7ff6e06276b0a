"""The server database's tables (SQLAlchemy Core) and how a path or a database URL becomes an engine.

One schema for both backends:
- the embedded SQLite file (default: STATE_DIR/serve.db): WAL journal, one connection shared under a lock, every
  write in its own `BEGIN IMMEDIATE` transaction (one commit per write; a killed server loses no committed row);
- a database URL (`database_url` in the serve config, e.g. postgresql+psycopg://USER@HOST/DB): a connection pool,
  shared by every replica behind a load balancer (keys, usage, the request log, feedback and the rate-limit buckets).

Older SQLite files are migrated in place: missing tables are created and ADDED_COLUMNS added to `requests`.
"""
from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import (
    Column,
    Double,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import StaticPool

BACKENDS = ("sqlite", "postgresql")
metadata = MetaData()

keys = Table(
    "keys", metadata,
    Column("id", Text, primary_key=True), Column("name", Text, nullable=False),
    Column("hash", Text, nullable=False, unique=True), Column("admin", Integer, nullable=False, server_default="0"),
    Column("models", Text), Column("rpm", Integer), Column("tpm", Integer), Column("daily_tokens", Integer),
    Column("created", Double, nullable=False), Column("revoked", Double))

usage = Table(
    "usage", metadata,
    Column("key_id", Text, nullable=False), Column("day", Text, nullable=False),
    Column("tokens", Integer, nullable=False), PrimaryKeyConstraint("key_id", "day"))

requests = Table(
    "requests", metadata,
    Column("id", Text, primary_key=True), Column("created", Double, nullable=False), Column("key_id", Text),
    Column("model", Text), Column("adapter", Text), Column("route", Text), Column("status", Integer),
    Column("prompt", Text), Column("response", Text), Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer), Column("latency_s", Double), Column("queue_s", Double),
    Column("ttft_s", Double), Column("finish_reason", Text), Column("guardrails", Text), Column("error", Text),
    Column("version", Integer), Column("arm", Text), Column("mean_logprob", Double), Column("low_confidence", Integer))

feedback = Table(
    "feedback", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True), Column("response_id", Text, nullable=False),
    Column("created", Double, nullable=False), Column("key_id", Text), Column("rating", Integer),
    Column("correction", Text), Column("preferred", Text), Column("comment", Text),
    sqlite_autoincrement=True)

# Rate-limit token buckets shared by replicas (serve/db/limits.py SharedRateLimiter); stamp is wall-clock time.time().
buckets = Table(
    "rate_buckets", metadata,
    Column("key_id", Text, nullable=False), Column("kind", Text, nullable=False),
    Column("capacity", Double, nullable=False), Column("level", Double, nullable=False),
    Column("stamp", Double, nullable=False), PrimaryKeyConstraint("key_id", "kind"))

# Columns of `requests` added after the first release: added in place to older databases.
ADDED_COLUMNS = ("version", "arm", "mean_logprob", "low_confidence")
# Any constant: PostgreSQL replicas starting together create the tables one at a time under this lock.
_DDL_LOCK = 7_360_114


def safe_url(url: str | URL) -> str:
    """A database URL as it may be shown: the password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not even parseable: mask what looks like user:password@
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))


def is_url(target: str | Path) -> bool:
    return isinstance(target, str) and "://" in target


def database_url(target: str | Path) -> URL:
    """The SQLAlchemy URL of a database URL (postgresql:// and postgres:// mean psycopg 3) or of a SQLite file."""
    if not is_url(target):
        return URL.create("sqlite", database=str(Path(target)))
    url = make_url(target)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def sqlite_file(url: URL) -> Path | None:
    return Path(url.database) if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") \
        else None


def make_engine(url: URL) -> Engine:
    if url.get_backend_name() != "sqlite":
        connect_args = {"connect_timeout": 10} if url.get_backend_name() == "postgresql" else {}
        return create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=16, connect_args=connect_args)
    engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # the driver emits no BEGIN of its own: _begin below does
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:
        # The driver is in autocommit mode, so SQLAlchemy's transaction is this BEGIN: writes take the write lock
        # up front (no lock upgrade deadlock between processes), reads use a plain deferred BEGIN.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

    return engine


def create_tables(engine: Engine) -> None:
    """Create missing tables and add missing columns (in one transaction, one replica at a time)."""
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": _DDL_LOCK})
        metadata.create_all(conn)
        have = {c["name"] for c in inspect(conn).get_columns("requests")}
        for name in ADDED_COLUMNS:
            if name not in have:
                kind = requests.c[name].type.compile(dialect=engine.dialect)
                conn.execute(text(f"ALTER TABLE requests ADD COLUMN {name} {kind}"))


def insert_for(engine: Engine):
    """The dialect's insert (it has on_conflict_do_update/do_nothing: the upserts of usage and rate_buckets)."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert
