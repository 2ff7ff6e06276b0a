"""Per-key rate limits: requests and tokens per minute as token buckets (in memory), plus the daily quota (SQLite).

A bucket holds `capacity` units and refills at capacity / 60 per second, so a key may burst up to its per-minute
limit and then gets its limit spread over the minute. Tokens are charged as max_tokens + prompt tokens up front
(the request cannot run away with more) and the unused part is refunded when the answer is known.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass


@dataclass
class Bucket:
    capacity: float
    level: float
    stamp: float

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.capacity / 60.0)
        self.stamp = now

    def reset_seconds(self) -> float:
        """Seconds until the bucket is full again."""
        return (self.capacity - self.level) * 60.0 / self.capacity if self.capacity else 0.0


@dataclass
class Decision:
    allowed: bool
    headers: dict[str, str]
    retry_after: int = 0
    reason: str = ""


class RateLimiter:
    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self._lock = threading.Lock()

    def _bucket(self, key_id: str, kind: str, capacity: int, now: float) -> Bucket:
        bucket = self._buckets.get((key_id, kind))
        if bucket is None or bucket.capacity != capacity:
            bucket = self._buckets[(key_id, kind)] = Bucket(float(capacity), float(capacity), now)
        bucket.refill(now)
        return bucket

    def take(self, key_id: str, rpm: int | None, tpm: int | None, tokens: int) -> Decision:
        """Charge one request and `tokens`; refused (nothing charged) when either bucket lacks them."""
        now = time.monotonic()
        with self._lock:
            wanted = []
            if rpm:
                wanted.append(("requests", self._bucket(key_id, "requests", rpm, now), 1.0))
            if tpm:
                wanted.append(("tokens", self._bucket(key_id, "tokens", tpm, now), float(tokens)))
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
        with self._lock:
            bucket = self._buckets.get((key_id, "tokens"))
            if bucket is not None and tokens > 0:
                bucket.level = min(bucket.capacity, bucket.level + tokens)
