"""Prometheus metrics of one server (its own registry, so two servers in one process never share counters)."""
from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        # `version`: the registry version that answered (registry:NAME@ALIAS models; empty otherwise), so a canary
        # and production can be compared on live traffic.
        self.requests = Counter("tuneforge_requests", "Requests by route, model, registry version and HTTP status",
                                ["route", "model", "version", "status"], registry=r)
        self.latency = Histogram("tuneforge_request_latency_seconds", "End-to-end latency of generation requests",
                                 ["model", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("tuneforge_time_to_first_token_seconds", "Time from arrival to the first token",
                              ["model", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue = Histogram("tuneforge_queue_seconds", "Time a request waited for its batch to start",
                               ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("tuneforge_batch_size", "Requests per engine.generate call",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.prompt_tokens = Counter("tuneforge_prompt_tokens", "Prompt tokens", ["model", "version"], registry=r)
        self.completion_tokens = Counter("tuneforge_completion_tokens", "Generated tokens", ["model", "version"],
                                         registry=r)
        self.low_confidence = Counter("tuneforge_low_confidence", "Answers below the min_mean_logprob guardrail",
                                      ["model", "version"], registry=r)
        self.served_version = Gauge("tuneforge_served_version", "Registry version a followed model routes to",
                                    ["model", "arm"], registry=r)
        self.canary_weight = Gauge("tuneforge_canary_weight", "Share of a followed model's traffic sent to its "
                                   "canary", ["model"], registry=r)
        self.follow_errors = Counter("tuneforge_registry_follow_errors", "Failed registry polls/loads (the server "
                                     "keeps the versions it has)", ["model"], registry=r)
        self.auto_rollbacks = Counter("tuneforge_auto_rollbacks", "Canaries rolled back automatically", ["model"],
                                      registry=r)
        self.cost = Counter("tuneforge_cost", "Tokens x the configured price per 1000 tokens", ["model", "key"],
                            registry=r)
        self.guardrail_hits = Counter("tuneforge_guardrail_hits", "Triggered guardrails", ["model", "guardrail"],
                                      registry=r)
        self.loaded_adapters = Gauge("tuneforge_loaded_adapters", "Adapters in memory", registry=r)
        self.cache = Counter("tuneforge_cache_lookups", "Temperature-0 response cache lookups", ["result"],
                             registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
