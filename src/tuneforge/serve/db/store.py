"""The server's state: API keys (hashed), daily token usage, the request log and feedback (SQLAlchemy Core).

Embedded SQLite file by default (STATE_DIR/serve.db; WAL, one commit per write: a killed server loses no committed
row and leaves a database SQLite opens cleanly; one connection shared under a lock, since requests are short and the
engine, not the database, is the bottleneck). With a database URL (`database_url`, PostgreSQL via psycopg) several
replicas share the same keys, usage, log, feedback and rate limits. Tables and engines: serve/db/store_schema.py.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from tuneforge.errors import TuneforgeError
from tuneforge.serve.db.store_schema import (
    BACKENDS,
    create_tables,
    database_url,
    feedback,
    insert_for,
    is_url,
    keys,
    make_engine,
    requests,
    safe_url,
    sqlite_file,
    usage,
)

KEY_PREFIX = "tf-"


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    admin: bool
    models: tuple[str, ...] | None  # None: every model
    rpm: int | None
    tpm: int | None
    daily_tokens: int | None
    created: float
    revoked: float | None

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models


def hash_key(secret: str) -> str:
    # Keys are 32 random bytes, so a fast hash is enough (no dictionary to attack, unlike passwords).
    return hashlib.sha256(secret.encode()).hexdigest()


def today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


ENCRYPTED = "enc:"
_SECRET_COLUMNS = ("prompt", "response")


def load_cipher(key_file: str | Path, *, create: bool = False):
    """The Fernet cipher of a request-log key file (created, mode 600, when `create` and missing)."""
    from cryptography.fernet import Fernet

    path = Path(key_file)
    if not path.is_file():
        if not create:
            raise TuneforgeError(f"{path}: request-log key file not found",
                                 hint="the log is encrypted; pass the key file it was written with")
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(Fernet.generate_key())
    try:
        return Fernet(path.read_bytes().strip())
    except ValueError as exc:
        raise TuneforgeError(f"{path}: not a request-log key ({exc})") from None


class Store:
    """`path`: the SQLite file, or a database URL (sqlite:///FILE or postgresql+psycopg://USER@HOST[:PORT]/DB)."""

    def __init__(self, path: str | Path, cipher=None):
        self.cipher = cipher  # set: prompts and responses are stored encrypted (Fernet, AES-128-CBC + HMAC)
        self.shared = is_url(path)  # a database URL: replicas share it (and the rate-limit buckets in it)
        self.where = safe_url(path) if self.shared else str(path)  # for messages: never the password
        try:
            url = database_url(path)
            if url.get_backend_name() not in BACKENDS:
                raise TuneforgeError(f"{self.where}: the server database must be SQLite or PostgreSQL, not "
                                     f"{url.get_backend_name()}", hint="e.g. postgresql+psycopg://USER@HOST/DB")
            self.path = sqlite_file(url)  # None for a server database
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.engine = make_engine(url)
            create_tables(self.engine)
        except TuneforgeError:
            raise
        except (SQLAlchemyError, ImportError, ValueError, OSError) as exc:
            reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
            hint = None
            if isinstance(exc, ImportError):
                hint = "PostgreSQL needs psycopg 3: pip install 'tuneforge[postgres]'"
            elif self.shared:
                hint = ("check the URL, that the database server is reachable and that the user may create tables "
                        "(the password may also come from $PGPASSWORD or ~/.pgpass)")
            raise TuneforgeError(f"{self.where}: cannot open the server database ({reason})", hint=hint) from None
        # SQLite: one connection (StaticPool) shared by the request threads; a server database: a connection pool.
        self._lock = threading.Lock() if self.engine.dialect.name == "sqlite" else contextlib.nullcontext()

    def close(self) -> None:
        with self._lock:
            self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self):
        """One write transaction (committed on exit, rolled back on an error): SQLite takes its write lock up
        front (BEGIN IMMEDIATE); PostgreSQL rows read FOR UPDATE stay locked until the commit."""
        with self._lock, self.engine.connect().execution_options(write=True) as conn, conn.begin():
            yield conn

    def _read(self, statement) -> list:
        with self._lock, self.engine.connect() as conn:
            return conn.execute(statement).all()

    def _write(self, statement, params=None):
        with self.transaction() as conn:
            return conn.execute(statement, params)

    # ------------------------------------------------------------------ keys
    def create_key(self, name: str, *, admin: bool = False, models: list[str] | None = None, rpm: int | None = None,
                   tpm: int | None = None, daily_tokens: int | None = None) -> tuple[ApiKey, str]:
        """A new key; the secret is returned once and only its hash is stored."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = "key_" + uuid.uuid4().hex[:12]
        self._write(keys.insert().values(
            id=key_id, name=name, hash=hash_key(secret), admin=int(admin),
            models=json.dumps(models) if models else None, rpm=rpm, tpm=tpm, daily_tokens=daily_tokens,
            created=time.time()))
        return self.get_key(key_id), secret

    def _key(self, row) -> ApiKey:
        kid, name, _, admin, models, rpm, tpm, daily, created, revoked = row
        return ApiKey(kid, name, bool(admin), tuple(json.loads(models)) if models else None, rpm, tpm, daily,
                      created, revoked)

    def get_key(self, key_id: str) -> ApiKey | None:
        rows = self._read(select(keys).where(keys.c.id == key_id))
        return self._key(rows[0]) if rows else None

    def lookup(self, secret: str) -> ApiKey | None:
        rows = self._read(select(keys).where(keys.c.hash == hash_key(secret), keys.c.revoked.is_(None)))
        return self._key(rows[0]) if rows else None

    def list_keys(self) -> list[ApiKey]:
        return [self._key(r) for r in self._read(select(keys).order_by(keys.c.created))]

    def revoke(self, key_id: str) -> bool:
        result = self._write(update(keys).where(keys.c.id == key_id, keys.c.revoked.is_(None))
                             .values(revoked=time.time()))
        return result.rowcount > 0

    # ------------------------------------------------------------------ daily quota
    def tokens_today(self, key_id: str) -> int:
        rows = self._read(select(usage.c.tokens).where(usage.c.key_id == key_id, usage.c.day == today()))
        return int(rows[0][0]) if rows else 0

    def add_tokens(self, key_id: str, tokens: int) -> None:
        """Add to today's count in one statement (an upsert: concurrent replicas add up, none overwrites)."""
        statement = insert_for(self.engine)(usage).values(key_id=key_id, day=today(), tokens=int(tokens))
        self._write(statement.on_conflict_do_update(index_elements=[usage.c.key_id, usage.c.day],
                                                    set_={"tokens": usage.c.tokens + statement.excluded.tokens}))

    # ------------------------------------------------------------------ request log + feedback
    def log_request(self, **row) -> None:
        row.setdefault("created", time.time())
        if isinstance(row.get("guardrails"), (list, dict)):
            row["guardrails"] = json.dumps(row["guardrails"])
        if self.cipher is not None:
            for column in _SECRET_COLUMNS:
                if row.get(column) is not None:
                    row[column] = ENCRYPTED + self.cipher.encrypt(row[column].encode()).decode()
        self._write(requests.insert(), row)

    def request(self, request_id: str) -> dict | None:
        rows = self._read(select(requests).where(requests.c.id == request_id))
        return self._readable(dict(rows[0]._mapping)) if rows else None

    def requests(self) -> list[dict]:
        return [self._readable(dict(r._mapping)) for r in self._read(select(requests).order_by(requests.c.created))]

    def version_rows(self, model: str, since: float = 0.0) -> list[dict]:
        """Registry-routed requests of a served name since a time, with their latest feedback rating (what live
        canary statistics are computed from; prompts and responses are not read)."""
        r, f = requests.c, feedback.c
        rating = (select(f.rating).where(f.response_id == r.id, f.rating.is_not(None)).order_by(f.id.desc())
                  .limit(1).scalar_subquery().label("rating"))
        statement = (select(r.id, r.version, r.arm, r.status, r.latency_s, r.guardrails, r.low_confidence, rating)
                     .where(r.model == model, r.version.is_not(None), r.created >= since).order_by(r.created))
        return [dict(row._mapping) for row in self._read(statement)]

    def _readable(self, row: dict) -> dict:
        """Decrypt the secret columns when this store has the key; without it they stay ciphertext."""
        for column in _SECRET_COLUMNS:
            value = row.get(column)
            if self.cipher is not None and isinstance(value, str) and value.startswith(ENCRYPTED):
                from cryptography.fernet import InvalidToken

                try:
                    row[column] = self.cipher.decrypt(value[len(ENCRYPTED):].encode()).decode()
                except InvalidToken:
                    raise TuneforgeError(f"{self.where}: the request log was encrypted with another key") from None
        return row

    def add_feedback(self, response_id: str, key_id: str | None, *, rating: int | None, correction: str | None,
                     preferred: str | None, comment: str | None) -> int:
        result = self._write(feedback.insert().values(
            response_id=response_id, created=time.time(), key_id=key_id, rating=rating, correction=correction,
            preferred=preferred, comment=comment))
        return int(result.inserted_primary_key[0])

    def feedback(self) -> list[dict]:
        statement = (select(feedback, requests.c.prompt, requests.c.response, requests.c.model)
                     .join_from(feedback, requests, feedback.c.response_id == requests.c.id).order_by(feedback.c.id))
        return [self._readable(dict(r._mapping)) for r in self._read(statement)]


def export_feedback(store: Store) -> tuple[list[dict], list[dict]]:
    """Training rows from feedback: chat rows from corrections, preference pairs from preferred answers.

    The logged prompt is the request's message list (chat) or raw prompt string (completions); completions become
    a one-turn user message so both land in the chat/preference formats `tuneforge data validate` accepts.
    """
    chat, pairs = [], []
    for row in store.feedback():
        prompt = json.loads(row["prompt"]) if row["prompt"] else None
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt or "")}]
        messages = [m for m in messages if m.get("role") in ("system", "user", "assistant")]
        if not messages or messages[-1]["role"] != "user":
            continue
        if row["correction"]:
            chat.append({"id": f"fb-{row['id']}", "messages": messages + [
                {"role": "assistant", "content": row["correction"]}]})
        if row["preferred"] and row["response"] is not None and row["preferred"] != row["response"]:
            pairs.append({"id": f"fb-{row['id']}", "prompt": messages,
                          "chosen": [{"role": "assistant", "content": row["preferred"]}],
                          "rejected": [{"role": "assistant", "content": row["response"]}]})
    return chat, pairs
