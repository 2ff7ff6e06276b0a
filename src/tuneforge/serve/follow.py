"""Serving registry aliases: `path: registry:NAME@production` in the serve config follows the alias.

At start the alias (and its canary alias) are resolved and their versions loaded as adapters named `SERVED@vN`.
A poller reads the registry every `registry_poll_s` (one snapshot read: last event id + alias targets + weights);
when anything moved it loads the new version first and then swaps the route in one assignment, so a request
already routed keeps its version (old versions stay registered; the LRU pool frees their memory) and no request
fails across a promote or rollback.

Canary routing: the canary alias's weight (`registry promote NAME V --to canary --weight 0.1`) is the share of
the served name's traffic sent to the canary's version, chosen by a hash of the request's stickiness key (the
`user` field, else the client's x-request-id, else the request id) so one user stays on one version.

Automatic rollback: the same poller compares canary and production over the configured window of the request
log (`version_stats`, the numbers `tuneforge registry compare --live` prints) and, when the canary is worse by
more than a configured margin, sets the canary's weight to 0 in the registry with the reason as a `weight` event.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tuneforge.serve.config import REGISTRY_PREFIX, AdapterEntry, AutoRollback

log = logging.getLogger("tuneforge.serve")
AUTO_ROLLBACK_ACTOR = "tuneforge-serve (auto-rollback)"


@dataclass(frozen=True)
class Target:
    version: int
    adapter: str       # the adapter's name in the serving engine: SERVED@vN
    arm: str           # "production" or "canary"


@dataclass(frozen=True)
class Route:
    name: str
    registry_name: str
    production: Target
    canary: Target | None = None
    weight: float = 0.0

    def pick(self, key: str) -> Target:
        """The version answering a request: the canary for `weight` of the stickiness keys, else production."""
        if self.canary is None or self.weight <= 0:
            return self.production
        return self.canary if bucket(self.name, key) < self.weight else self.production


def bucket(name: str, key: str) -> float:
    """A key's fixed place in [0, 1): the same user lands on the same side for every weight below/above it."""
    digest = hashlib.sha256(f"{name}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def parse_registry_path(path: str) -> tuple[str, str]:
    from tuneforge.models.ref import parse_model_ref

    ref = parse_model_ref(path)
    return ref.name, ref.version


def version_stats(store, model: str, *, window_s: float | None = None, negative_rating_max: int = 0,
                  now: float | None = None) -> list[dict]:
    """Per (version, arm) of a served name over the last `window_s` seconds of the request log: requests, error
    rate (5xx and 422 output failures), guardrail-hit rate, negative-feedback rate among rated responses, p50/p95
    latency of the answered ones, low-confidence share. The numbers `registry compare --live` prints and the
    automatic rollback judges."""
    since = (now or time.time()) - window_s if window_s else 0.0
    rows = store.version_rows(model, since)
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["version"], row["arm"] or "production"), []).append(row)
    out = []
    for (version, arm), items in sorted(groups.items(), key=lambda kv: (kv[0][1] != "production", kv[0][0])):
        latencies = sorted(r["latency_s"] for r in items if r["status"] == 200 and r["latency_s"] is not None)
        rated = [r for r in items if r["rating"] is not None]
        errors = sum(1 for r in items if r["status"] >= 500 or r["status"] == 422)
        out.append({"model": model, "version": version, "arm": arm, "requests": len(items),
                    "error_rate": errors / len(items),
                    "guardrail_rate": sum(1 for r in items if r["guardrails"]) / len(items),
                    "rated": len(rated),
                    "negative_feedback_rate": (sum(1 for r in rated if r["rating"] <= negative_rating_max)
                                               / len(rated)) if rated else 0.0,
                    "low_confidence_rate": sum(1 for r in items if r["low_confidence"]) / len(items),
                    "p50_latency_s": _quantile(latencies, 0.5), "p95_latency_s": _quantile(latencies, 0.95)})
    return out


def _quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile of sorted values (None when empty)."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, int(-(-q * len(values) // 1)) - 1))]


def rollback_reason(canary: dict, production: dict | None, rules: AutoRollback) -> str | None:
    """Why the canary should lose its traffic, or None. Production with no requests counts as all zeros."""
    if canary["requests"] < rules.min_requests:
        return None
    prod = production or {"error_rate": 0.0, "guardrail_rate": 0.0, "negative_feedback_rate": 0.0,
                          "p95_latency_s": None}
    checks = [("error rate", "error_rate", rules.max_error_rate_delta),
              ("guardrail-hit rate", "guardrail_rate", rules.max_guardrail_rate_delta),
              ("negative-feedback rate", "negative_feedback_rate", rules.max_negative_feedback_delta)]
    for label, field, margin in checks:
        if margin is not None and canary[field] - prod[field] > margin:
            return (f"auto-rollback: canary v{canary['version']} {label} {canary[field]:.3f} vs production "
                    f"{prod[field]:.3f} (margin {margin}) over {canary['requests']} canary requests in "
                    f"{rules.window_s:g} s")
    ratio = rules.max_p95_latency_ratio
    if ratio and canary["p95_latency_s"] and prod.get("p95_latency_s") \
            and canary["p95_latency_s"] > ratio * prod["p95_latency_s"]:
        return (f"auto-rollback: canary v{canary['version']} p95 latency {canary['p95_latency_s']:.3f} s > "
                f"{ratio} x production {prod['p95_latency_s']:.3f} s over {canary['requests']} canary requests")
    return None


class Follower:
    """Resolves and follows the registry aliases of the configured adapters; `routes` is read by the routes."""

    def __init__(self, entries: list[AdapterEntry], serving, *, db: str | Path | None, poll_s: float,
                 request_store=None, metrics=None):
        from tuneforge.registry.store import default_db_path

        self.entries = [e for e in entries if e.path.startswith(REGISTRY_PREFIX)]
        self.serving, self.poll_s, self.request_store, self.metrics = serving, poll_s, request_store, metrics
        self.db = Path(db) if db else default_db_path("runs")
        self.routes: dict[str, Route] = {}
        self.last_event: dict[str, int] = {}
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __bool__(self) -> bool:
        return bool(self.entries)

    # ------------------------------------------------------------------ following
    def start(self) -> None:
        """Resolve every followed alias now (a failure here stops the start: nothing to serve), then poll."""
        for entry in self.entries:
            self.sync(entry, force=True)
        if self.entries:
            self._thread = threading.Thread(target=self._poll, name="tuneforge-serve-registry", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            for entry in self.entries:
                try:
                    self.sync(entry)
                    if entry.auto_rollback and self.request_store is not None:
                        self.judge(entry)
                    self.last_error = None
                except Exception as exc:  # noqa: BLE001 - the server keeps the versions it has; reported on /health
                    self.last_error = f"{entry.name}: {exc}"
                    log.warning("registry follow: %s", self.last_error)
                    if self.metrics is not None:
                        self.metrics.follow_errors.labels(entry.name).inc()

    def sync(self, entry: AdapterEntry, *, force: bool = False) -> Route | None:
        """Re-read the aliases when the registry changed; load new versions, then switch the route."""
        from tuneforge.registry.release import follow_state

        registry_name, alias = parse_registry_path(entry.path)
        event_id, state = follow_state(self.db, registry_name)
        if not force and self.last_event.get(entry.name) == event_id:
            return self.routes.get(entry.name)
        if alias.isdigit() or alias.lower().lstrip("v").isdigit():
            from tuneforge.registry.store import parse_version

            production_version = parse_version(alias)
        elif alias in state:
            production_version = state[alias][0]
        else:
            from tuneforge.registry.store import RegistryError

            raise RegistryError(f"{entry.path}: {registry_name} has no alias {alias!r}",
                                hint=f"promote a version first: tuneforge registry promote {registry_name} "
                                     f"VERSION --to {alias}")
        production = Target(production_version, self._load(entry, registry_name, production_version), "production")
        canary, weight = None, 0.0
        if entry.canary_alias and entry.canary_alias in state and entry.canary_alias != alias:
            canary_version, canary_weight = state[entry.canary_alias]
            if canary_weight and canary_version != production_version:
                canary = Target(canary_version, self._load(entry, registry_name, canary_version), "canary")
                weight = float(canary_weight)
        route = Route(entry.name, registry_name, production, canary, weight)
        previous = self.routes.get(entry.name)
        self.routes = {**self.routes, entry.name: route}  # one assignment: readers see the old or the new dict
        self.last_event[entry.name] = event_id
        if previous != route:
            log.info("registry follow: %s -> v%s%s", entry.name, production.version,
                     f" + canary v{canary.version} at {weight:.0%}" if canary else "")
        return route

    def _load(self, entry: AdapterEntry, registry_name: str, version: int) -> str:
        """Register (check + load) version `version` under SERVED@vN on the engine's worker; return the name."""
        from tuneforge.registry.release import resolve
        from tuneforge.registry.store import RegistryError

        name = f"{entry.name}@v{version}"
        if name in self.serving.known:
            return name
        resolved = resolve(self.db, registry_name, version)
        if resolved.kind != "adapter" or not resolved.model_ref.adapter_path:
            raise RegistryError(f"{registry_name} v{version} is a {resolved.kind} model; a followed alias is served "
                                "as an adapter on the server's shared base",
                                hint=f"register the run's adapter (`tuneforge registry register RUN --name "
                                     f"{registry_name} --kind adapter`), or serve the merged model as `base:`")
        adapter_path = resolved.model_ref.adapter_path
        self.serving.control(lambda: self.serving.register(name, adapter_path)).result()
        return name

    def pin(self, served: str, version: int) -> str:
        """SERVED@vN asked for by name: load that registered version (once) and return its adapter name."""
        entry = next(e for e in self.entries if e.name == served)
        return self._load(entry, parse_registry_path(entry.path)[0], version)

    # ------------------------------------------------------------------ automatic rollback
    def judge(self, entry: AdapterEntry) -> str | None:
        """Compare canary and production over the window; on a breach set the canary weight to 0 (recorded)."""
        from tuneforge.registry.release import set_weight
        from tuneforge.registry.store import Store

        route = self.routes.get(entry.name)
        rules = entry.auto_rollback
        if route is None or route.canary is None or rules is None:
            return None
        stats = version_stats(self.request_store, entry.name, window_s=rules.window_s,
                              negative_rating_max=rules.negative_rating_max)
        canary = next((s for s in stats if s["arm"] == "canary" and s["version"] == route.canary.version), None)
        production = next((s for s in stats if s["arm"] == "production"
                           and s["version"] == route.production.version), None)
        reason = rollback_reason(canary, production, rules) if canary else None
        if reason is None:
            return None
        with Store(self.db) as store:
            set_weight(store, route.registry_name, entry.canary_alias, 0.0, actor=AUTO_ROLLBACK_ACTOR,
                       reason=reason)
        log.warning("registry follow: %s", reason)
        if self.metrics is not None:
            self.metrics.auto_rollbacks.labels(entry.name).inc()
        self.sync(entry)
        return reason
