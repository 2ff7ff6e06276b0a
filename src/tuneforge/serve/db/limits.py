"""Per-key rate limits: requests and tokens per minute as token buckets, plus the daily quota (the server database).

A bucket holds `capacity` units and refills at capacity / 60 per second, so a key may burst up to its per-minute
limit and then gets its limit spread over the minute. Tokens are charged as max_tokens + prompt tokens up front
(the request cannot run away with more) and the unused part is refunded when the answer is known.

Where the buckets live is the only difference between the two limiters; what a request is charged and the
Decision (headers, retry-after) are computed once, in `RateLimiter.take`:
- RateLimiter: in this process's memory (one server on the embedded SQLite file; the default);
- SharedRateLimiter: rows of the server database's rate_buckets table, read FOR UPDATE and written back in one
  transaction, so replicas sharing a database URL share each key's limits (stamps are wall-clock time.time(),
  since replicas share no monotonic clock).
"""
from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

KINDS = ("requests", "tokens")


@dataclass
class Bucket:
    capacity: float
    level: float
    stamp: float

    def refill(self, now: float) -> None:
        # max(): a replica whose clock is behind the last writer's neither drains the bucket nor moves time back.
        self.level = min(self.capacity, self.level + max(0.0, now - self.stamp) * self.capacity / 60.0)
        self.stamp = max(self.stamp, now)

    def reset_seconds(self) -> float:
        """Seconds until the bucket is full again."""
        return (self.capacity - self.level) * 60.0 / self.capacity if self.capacity else 0.0


def current(bucket: Bucket | None, capacity: float, now: float) -> Bucket:
    """The bucket refilled up to now; a new full one when there was none or the key's limit changed."""
    if bucket is None or bucket.capacity != capacity:
        return Bucket(float(capacity), float(capacity), now)
    bucket.refill(now)
    return bucket


@dataclass
class Decision:
    allowed: bool
    headers: dict[str, str]
    retry_after: int = 0
    reason: str = ""


class RateLimiter:
    """Buckets in this process's memory."""

    clock = staticmethod(time.monotonic)

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self, key_id: str, capacities: dict[str, int | None], now: float) -> Iterator[dict[str, Bucket]]:
        """The key's buckets of these kinds, current and locked for the block; changes to them are kept. A capacity
        of None: only a bucket that exists (a refund never creates one)."""
        with self._lock:
            found = {}
            for kind, capacity in capacities.items():
                bucket = self._buckets.get((key_id, kind))
                if capacity is None:
                    capacity = bucket.capacity if bucket else None
                if capacity is not None:
                    found[kind] = self._buckets[(key_id, kind)] = current(bucket, capacity, now)
            yield found

    def take(self, key_id: str, rpm: int | None, tpm: int | None, tokens: int) -> Decision:
        """Charge one request and `tokens`; refused (nothing charged) when either bucket lacks them."""
        capacities = {kind: limit for kind, limit in zip(KINDS, (rpm, tpm)) if limit}
        if not capacities:
            return Decision(True, {})  # an unlimited key: no bucket to read (nor a database round trip)
        needs = {"requests": 1.0, "tokens": float(tokens)}
        with self._locked(key_id, capacities, self.clock()) as found:
            wanted = [(kind, found[kind], needs[kind]) for kind in KINDS if kind in found]
            short = [(kind, b, need) for kind, b, need in wanted if b.level < need]
            if not short:
                for _, bucket, need in wanted:
                    bucket.level -= need
            headers = {}
            for kind, bucket, _ in wanted:
                headers[f"x-ratelimit-limit-{kind}"] = str(int(bucket.capacity))
                headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(bucket.level)))
                headers[f"x-ratelimit-reset-{kind}"] = f"{bucket.reset_seconds():.1f}s"
        if tpm and tokens > tpm:
            # OpenAI's behaviour too: a request larger than a minute's budget is refused, not queued forever.
            return Decision(False, headers, 60, f"the request needs {tokens} tokens (prompt + max_tokens), "
                                                f"more than this key's {tpm} tokens per minute")
        if short:
            kind, bucket, need = short[0]
            wait = (need - bucket.level) * 60.0 / bucket.capacity
            return Decision(False, headers, max(1, math.ceil(wait)), f"rate limit reached for {kind} per minute")
        return Decision(True, headers)

    def refund(self, key_id: str, tokens: int) -> None:
        if tokens <= 0:
            return
        with self._locked(key_id, {"tokens": None}, self.clock()) as found:
            bucket = found.get("tokens")
            if bucket is not None:
                bucket.level = min(bucket.capacity, bucket.level + tokens)


class SharedRateLimiter(RateLimiter):
    """Buckets in the server database, shared by every replica on it (one transaction per take/refund)."""

    clock = staticmethod(time.time)

    def __init__(self, store) -> None:
        super().__init__()
        self.store = store

    @contextlib.contextmanager
    def _locked(self, key_id: str, capacities: dict[str, int | None], now: float) -> Iterator[dict[str, Bucket]]:
        from sqlalchemy import select, update

        from tuneforge.serve.db.store_schema import buckets, insert_for

        kinds = sorted(capacities)  # rows are locked in one order by everyone: no deadlock between replicas
        query = (select(buckets.c.kind, buckets.c.capacity, buckets.c.level, buckets.c.stamp)
                 .where(buckets.c.key_id == key_id, buckets.c.kind.in_(kinds)).order_by(buckets.c.kind)
                 .with_for_update())
        with self.store.transaction() as conn:
            rows = {kind: Bucket(capacity, level, stamp) for kind, capacity, level, stamp in conn.execute(query)}
            missing = [kind for kind in kinds if kind not in rows and capacities[kind] is not None]
            if missing:  # first use of this key: create full buckets (a replica doing the same at once wins)
                insert = insert_for(self.store.engine)
                conn.execute(insert(buckets).on_conflict_do_nothing(), [
                    {"key_id": key_id, "kind": kind, "capacity": float(capacities[kind]),
                     "level": float(capacities[kind]), "stamp": now} for kind in missing])
                rows = {kind: Bucket(capacity, level, stamp) for kind, capacity, level, stamp in conn.execute(query)}
            found = {kind: current(rows.get(kind), capacities[kind] or rows[kind].capacity, now)
                     for kind in kinds if kind in rows or capacities[kind] is not None}
            yield found
            for kind, bucket in found.items():
                conn.execute(update(buckets).where(buckets.c.key_id == key_id, buckets.c.kind == kind)
                             .values(capacity=bucket.capacity, level=bucket.level, stamp=bucket.stamp))


def limiter_for(store) -> RateLimiter:
    """Buckets shared through the database when the store is a database URL (replicas), else in memory."""
    return SharedRateLimiter(store) if getattr(store, "shared", False) else RateLimiter()
