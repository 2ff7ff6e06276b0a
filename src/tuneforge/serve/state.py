"""What every route of the server shares: the loaded model, the key store, limits, metrics, the response cache, and
the per-request checks that read them (readiness, API key, body size, which model and guardrails a name means)."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from fastapi import Request

from tuneforge.serve.config import Guardrails, ServeConfig
from tuneforge.serve.db.limits import RateLimiter, limiter_for
from tuneforge.serve.db.store import ApiKey, Store
from tuneforge.serve.engines.engine import ServingEngine
from tuneforge.serve.follow import Follower
from tuneforge.serve.metrics import ServeMetrics
from tuneforge.serve.protocol import ApiError


@dataclass
class Served:
    """Everything a request needs once the model is loaded."""

    serving: ServingEngine
    base_name: str
    stop_ids: set[int]
    decode: object


@dataclass
class State:
    cfg: ServeConfig
    store: Store
    metrics: ServeMetrics = field(default_factory=ServeMetrics)
    limiter: RateLimiter | None = None  # default: shared through the database when the store is a database URL
    served: Served | None = None
    load_error: str | None = None
    cache: OrderedDict = field(default_factory=OrderedDict)
    cache_lock: threading.Lock = field(default_factory=threading.Lock)
    follower: Follower | None = None

    def __post_init__(self) -> None:
        if self.limiter is None:
            self.limiter = limiter_for(self.store)

    def ready(self) -> Served:
        """The loaded model, or 503 while it loads (with retry-after) or after it failed to load."""
        if self.served is None:
            if self.load_error:
                raise ApiError(503, f"the model failed to load: {self.load_error}", code="model_load_failed")
            raise ApiError(503, "the model is still loading", code="loading", headers={"retry-after": "5"})
        return self.served

    def authenticate(self, request: Request, *, admin: bool = False) -> ApiKey:
        header = request.headers.get("authorization", "")
        secret = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not secret:
            raise ApiError(401, "no API key: send `Authorization: Bearer KEY`", code="missing_api_key")
        key = self.store.lookup(secret)
        if key is None:
            raise ApiError(401, "invalid or revoked API key", code="invalid_api_key")
        if admin and not key.admin:
            raise ApiError(403, "this route needs an admin key", code="admin_required")
        request.state.key = key
        return key

    async def body(self, request: Request) -> bytes:
        raw = await request.body()
        if len(raw) > self.cfg.limits.max_body_bytes:
            raise ApiError(413, f"the request body is {len(raw)} bytes; the limit is {self.cfg.limits.max_body_bytes}",
                           code="body_too_large")
        return raw

    def guard_for(self, model: str) -> Guardrails:
        model = model.split("@")[0]  # a pinned registry version (NAME@vN) has its followed model's guardrails
        for adapter in self.cfg.adapters:
            if adapter.name == model and adapter.guardrails is not None:
                return adapter.guardrails
        return self.cfg.guardrails

    def price_for(self, model: str) -> float:
        model = model.split("@")[0]
        for adapter in self.cfg.adapters:
            if adapter.name == model:
                return adapter.price_per_1k_tokens
        return self.cfg.base_price_per_1k_tokens

    def resolve_model(self, name: str, key: ApiKey, served: Served) -> str | None:
        """The adapter a requested model name means (None: the base); 404 unknown, 403 not allowed for this key."""
        if name != served.base_name and name not in served.serving.known:
            raise ApiError(404, f"the model {name!r} does not exist", code="model_not_found", param="model")
        if not key.allows(name):
            raise ApiError(403, f"this key may not use the model {name!r}", code="model_not_allowed", param="model")
        return None if name == served.base_name else name

    def count_guardrail_hits(self, model: str, names: list[str], into: list[str]) -> None:
        for name in names:
            self.metrics.guardrail_hits.labels(model, name).inc()
            into.append(name)


def seconds_to_midnight() -> int:
    now = time.time()
    return int(86400 - now % 86400) + 1
