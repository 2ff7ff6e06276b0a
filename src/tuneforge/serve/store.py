"""The server's embedded SQLite state: API keys (hashed), daily token usage, the request log and feedback.

WAL journal and one commit per write: a killed server loses no committed row and leaves a database SQLite opens
cleanly. One connection shared under a lock (requests are short; the engine, not SQLite, is the bottleneck).
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import TuneforgeError

KEY_PREFIX = "tf-"
SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, admin INTEGER NOT NULL DEFAULT 0,
  models TEXT, rpm INTEGER, tpm INTEGER, daily_tokens INTEGER, created REAL NOT NULL, revoked REAL);
CREATE TABLE IF NOT EXISTS usage (key_id TEXT NOT NULL, day TEXT NOT NULL, tokens INTEGER NOT NULL,
  PRIMARY KEY (key_id, day));
CREATE TABLE IF NOT EXISTS requests (
  id TEXT PRIMARY KEY, created REAL NOT NULL, key_id TEXT, model TEXT, adapter TEXT, route TEXT, status INTEGER,
  prompt TEXT, response TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, latency_s REAL, queue_s REAL,
  ttft_s REAL, finish_reason TEXT, guardrails TEXT, error TEXT, version INTEGER, arm TEXT, mean_logprob REAL,
  low_confidence INTEGER);
CREATE TABLE IF NOT EXISTS feedback (
  id INTEGER PRIMARY KEY AUTOINCREMENT, response_id TEXT NOT NULL, created REAL NOT NULL, key_id TEXT,
  rating INTEGER, correction TEXT, preferred TEXT, comment TEXT);
"""
# Columns added after the first release: (name, type), added in place to older databases.
ADDED_COLUMNS = (("version", "INTEGER"), ("arm", "TEXT"), ("mean_logprob", "REAL"), ("low_confidence", "INTEGER"))


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
    def __init__(self, path: str | Path, cipher=None):
        self.path = Path(path)
        self.cipher = cipher  # set: prompts and responses are stored encrypted (Fernet, AES-128-CBC + HMAC)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            have = {r[1] for r in self._db.execute("PRAGMA table_info(requests)")}
            for name, kind in ADDED_COLUMNS:
                if name not in have:
                    self._db.execute(f"ALTER TABLE requests ADD COLUMN {name} {kind}")
        except sqlite3.DatabaseError as exc:
            raise TuneforgeError(f"{self.path}: cannot open the server database ({exc})") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args=()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ------------------------------------------------------------------ keys
    def create_key(self, name: str, *, admin: bool = False, models: list[str] | None = None, rpm: int | None = None,
                   tpm: int | None = None, daily_tokens: int | None = None) -> tuple[ApiKey, str]:
        """A new key; the secret is returned once and only its hash is stored."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = "key_" + uuid.uuid4().hex[:12]
        self._run("INSERT INTO keys (id, name, hash, admin, models, rpm, tpm, daily_tokens, created) "
                  "VALUES (?,?,?,?,?,?,?,?,?)",
                  (key_id, name, hash_key(secret), int(admin), json.dumps(models) if models else None, rpm, tpm,
                   daily_tokens, time.time()))
        return self.get_key(key_id), secret

    def _key(self, row) -> ApiKey:
        kid, name, _, admin, models, rpm, tpm, daily, created, revoked = row
        return ApiKey(kid, name, bool(admin), tuple(json.loads(models)) if models else None, rpm, tpm, daily,
                      created, revoked)

    def get_key(self, key_id: str) -> ApiKey | None:
        rows = self._run("SELECT * FROM keys WHERE id = ?", (key_id,))
        return self._key(rows[0]) if rows else None

    def lookup(self, secret: str) -> ApiKey | None:
        rows = self._run("SELECT * FROM keys WHERE hash = ? AND revoked IS NULL", (hash_key(secret),))
        return self._key(rows[0]) if rows else None

    def list_keys(self) -> list[ApiKey]:
        return [self._key(r) for r in self._run("SELECT * FROM keys ORDER BY created")]

    def revoke(self, key_id: str) -> bool:
        with self._lock:
            cursor = self._db.execute("UPDATE keys SET revoked = ? WHERE id = ? AND revoked IS NULL",
                                      (time.time(), key_id))
            return cursor.rowcount > 0

    # ------------------------------------------------------------------ daily quota
    def tokens_today(self, key_id: str) -> int:
        rows = self._run("SELECT tokens FROM usage WHERE key_id = ? AND day = ?", (key_id, today()))
        return int(rows[0][0]) if rows else 0

    def add_tokens(self, key_id: str, tokens: int) -> None:
        self._run("INSERT INTO usage (key_id, day, tokens) VALUES (?,?,?) "
                  "ON CONFLICT (key_id, day) DO UPDATE SET tokens = tokens + excluded.tokens",
                  (key_id, today(), int(tokens)))

    # ------------------------------------------------------------------ request log + feedback
    def log_request(self, **row) -> None:
        row.setdefault("created", time.time())
        if isinstance(row.get("guardrails"), (list, dict)):
            row["guardrails"] = json.dumps(row["guardrails"])
        if self.cipher is not None:
            for column in _SECRET_COLUMNS:
                if row.get(column) is not None:
                    row[column] = ENCRYPTED + self.cipher.encrypt(row[column].encode()).decode()
        columns = ", ".join(row)
        self._run(f"INSERT INTO requests ({columns}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))

    def request(self, request_id: str) -> dict | None:
        with self._lock:
            cursor = self._db.execute("SELECT * FROM requests WHERE id = ?", (request_id,))
            row = cursor.fetchone()
            return self._readable(dict(zip([c[0] for c in cursor.description], row))) if row else None

    def requests(self) -> list[dict]:
        with self._lock:
            cursor = self._db.execute("SELECT * FROM requests ORDER BY created")
            names = [c[0] for c in cursor.description]
            return [self._readable(dict(zip(names, r))) for r in cursor.fetchall()]

    def version_rows(self, model: str, since: float = 0.0) -> list[dict]:
        """Registry-routed requests of a served name since a time, with their latest feedback rating (what live
        canary statistics are computed from; prompts and responses are not read)."""
        with self._lock:
            cursor = self._db.execute(
                "SELECT r.id, r.version, r.arm, r.status, r.latency_s, r.guardrails, r.low_confidence, "
                "(SELECT f.rating FROM feedback f WHERE f.response_id = r.id AND f.rating IS NOT NULL "
                " ORDER BY f.id DESC LIMIT 1) AS rating "
                "FROM requests r WHERE r.model = ? AND r.version IS NOT NULL AND r.created >= ? ORDER BY r.created",
                (model, since))
            names = [c[0] for c in cursor.description]
            return [dict(zip(names, r)) for r in cursor.fetchall()]

    def _readable(self, row: dict) -> dict:
        """Decrypt the secret columns when this store has the key; without it they stay ciphertext."""
        for column in _SECRET_COLUMNS:
            value = row.get(column)
            if self.cipher is not None and isinstance(value, str) and value.startswith(ENCRYPTED):
                from cryptography.fernet import InvalidToken

                try:
                    row[column] = self.cipher.decrypt(value[len(ENCRYPTED):].encode()).decode()
                except InvalidToken:
                    raise TuneforgeError(f"{self.path}: the request log was encrypted with another key") from None
        return row

    def add_feedback(self, response_id: str, key_id: str | None, *, rating: int | None, correction: str | None,
                     preferred: str | None, comment: str | None) -> int:
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO feedback (response_id, created, key_id, rating, correction, preferred, comment) "
                "VALUES (?,?,?,?,?,?,?)", (response_id, time.time(), key_id, rating, correction, preferred, comment))
            return int(cursor.lastrowid)

    def feedback(self) -> list[dict]:
        with self._lock:
            cursor = self._db.execute("SELECT f.*, r.prompt, r.response, r.model FROM feedback f "
                                      "JOIN requests r ON r.id = f.response_id ORDER BY f.id")
            names = [c[0] for c in cursor.description]
            return [self._readable(dict(zip(names, r))) for r in cursor.fetchall()]


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
