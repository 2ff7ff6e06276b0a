"""The serve YAML: one base model, the adapters served on it, limits, guardrails and the state folder.

    tuneforge serve serve.yaml         # this file
    tuneforge serve runs/quickstart    # zero-config: the run's base + its adapter under the run's name

Every section forbids unknown keys; errors name file, line and key like the training config's
(`serve.yaml:7: adapters.0.nmae: unknown key`).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from tuneforge.config.loader import _format_errors, _read_yaml
from tuneforge.config.schema import StrictModel
from tuneforge.errors import ConfigError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"


class Guardrails(StrictModel):
    max_prompt_tokens: int | None = Field(None, gt=0, description="Refuse (413) prompts longer than this many tokens.")
    pii: Literal["off", "block", "redact"] = Field(
        "off", description="Personal data in the prompt (tuneforge.data.pii detectors): block the request (400) or "
        "redact it before the model sees it.")
    blocklist: list[str] = Field(default_factory=list, description="Words/phrases (case-insensitive) refused in "
                                 "prompts (400) and masked in answers.")
    prompt_injection: Literal["off", "flag", "block"] = Field(
        "off", description="Prompt-injection patterns ('ignore previous instructions' and variants): count and log "
        "them (flag) or refuse the request (block, 400).")
    output_pii: Literal["off", "redact"] = Field("off", description="Redact personal data in answers.")
    output_regex: str | None = Field(None, description="Answers must match this regex (search); otherwise the "
                                     "request fails with 422 guardrail_output_regex.")
    min_mean_logprob: float | None = Field(
        None, le=0, description="Low-confidence escalation: an answer whose mean token log-probability (under the "
        "model that wrote it) is below this is flagged (`x-tuneforge-low-confidence: true`, `low_confidence` in the "
        "body, counted in /metrics) or refused (see low_confidence). Costs one scoring pass per answer.")
    low_confidence: Literal["flag", "refuse"] = Field(
        "flag", description="What a low-confidence answer gets: the flag, or a 422 low_confidence refusal.")

    @field_validator("output_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


REGISTRY_PREFIX = "registry:"


class AutoRollback(StrictModel):
    """Canary worse than production over the window -> the server sets the canary's weight to 0 in the registry
    (a `weight` event with the reason), and traffic returns to production within one poll."""

    window_s: float = Field(300.0, gt=0, description="Judge the requests of the last this-many seconds.")
    min_requests: int = Field(20, gt=0, description="Canary requests in the window before it is judged.")
    max_error_rate_delta: float | None = Field(
        0.05, ge=0, description="Roll back when the canary's error rate (5xx, 422 output failures) exceeds "
        "production's by more than this (0.05 = 5 points).")
    max_guardrail_rate_delta: float | None = Field(
        None, ge=0, description="... when its share of requests with a guardrail hit exceeds production's by more.")
    max_negative_feedback_delta: float | None = Field(
        None, ge=0, description="... when its share of rated responses rated negative exceeds production's by more.")
    max_p95_latency_ratio: float | None = Field(
        None, gt=0, description="... when its p95 latency is more than this many times production's.")
    negative_rating_max: int = Field(0, ge=-1, le=5, description="Feedback ratings at or below this are negative "
                                     "(-1 thumbs down; 0 on a 0-5 scale).")


class AdapterEntry(StrictModel):
    name: str = Field(..., pattern=NAME_PATTERN, description="Name clients put in the `model` field.")
    path: str = Field(..., description="PEFT adapter folder (or a run directory holding adapter/), or "
                      "registry:NAME@ALIAS to serve the alias's version and follow its promotions and rollbacks.")
    canary_alias: str | None = Field("canary", description="registry paths: the alias whose version gets its "
                                     "weight's share of this model's traffic (`registry promote NAME V --to canary "
                                     "--weight 0.1`); null: no canary.")
    auto_rollback: AutoRollback | None = Field(None, description="registry paths: roll a failing canary back "
                                               "automatically (needs the request log).")
    guardrails: Guardrails | None = Field(None, description="Guardrails for this adapter (default: the server's).")
    price_per_1k_tokens: float = Field(0.0, ge=0, description="Cost per 1000 tokens (prompt + generated) shown "
                                       "in /metrics.")


class Batching(StrictModel):
    max_batch_size: int = Field(16, gt=0, le=256, description="Most requests decoded together (rows of one batch).")
    continuous: bool = Field(True, description="Greedy requests join and leave the running batch between decoding "
                             "steps (iteration-level batching; engine tuneforge). False: a batch runs to its end "
                             "before the next starts.")
    window_ms: float = Field(10.0, ge=0, le=1000, description="How long the batcher waits for more requests after "
                             "the first one arrives.")
    max_queue: int = Field(256, gt=0, description="Requests waiting beyond this get 503 (overloaded).")


class Limits(StrictModel):
    max_tokens_default: int = Field(256, gt=0, description="max_tokens when a request gives none.")
    max_tokens_limit: int = Field(2048, gt=0, description="Largest max_tokens a request may ask for (422 above).")
    max_body_bytes: int = Field(1_000_000, gt=0, description="Largest request body (413 above).")
    default_rpm: int | None = Field(None, gt=0, description="Requests per minute for keys created without a limit.")
    default_tpm: int | None = Field(None, gt=0, description="Tokens per minute for keys created without a limit.")


class RequestLog(StrictModel):
    enabled: bool = Field(True, description="Write every request (prompt, response, adapter, tokens, latency, key "
                          "id) to the request log (state_dir/serve.db, or the database_url database).")
    redact_pii: bool = Field(False, description="Redact personal data in logged prompts and responses.")
    key_file: str | None = Field(None, description="Encrypt logged prompts and responses at rest with this key "
                                 "file (created, mode 600, on first start; relative to the config file). Without "
                                 "the key the log is unreadable.")


class RagSettings(StrictModel):
    indexes: dict[str, str] = Field(..., min_length=1, description="Index name (used in the model name "
                                    "rag/NAME/MODEL) -> index folder built by `tuneforge rag index`; relative to "
                                    "the config file.")
    k: int = Field(5, gt=0, le=50, description="Passages retrieved per request.")
    mode: Literal["hybrid", "dense", "bm25"] = Field("hybrid", description="Retrieval: BM25 + dense fused by "
                                                     "reciprocal rank fusion, or one side alone.")
    reranker: str | None = Field(None, description="Cross-encoder folder (relative to the config file) or hub id "
                                 "(needs the hub): the top rerank_candidates passages of `mode` are reordered by "
                                 "it and the k best kept. Default: no reranking.")
    rerank_candidates: int = Field(20, gt=0, le=200, description="Candidates retrieved for the reranker (at least "
                                   "k are); unused without a reranker.")

    @field_validator("indexes")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [name for name in value if not re.match(NAME_PATTERN, name)]
        if bad:
            raise ValueError(f"index names must match {NAME_PATTERN} (no slashes): {', '.join(map(repr, bad))}")
        return value


class ServeConfig(StrictModel):
    base: str = Field(..., description="Base model reference: catalog name, HF folder, .gguf, hub id or run.")
    base_name: str | None = Field(None, pattern=NAME_PATTERN, description="Name of the base in the `model` field "
                                  "(default: the catalog name or folder name).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights dtype.")
    engine: Literal["tuneforge", "llamacpp", "vllm"] = Field(
        "tuneforge", description="Inference engine: the embedded tuneforge engine (adapters, batching), llamacpp "
        "for a .gguf base (quantized CPU inference, one request at a time, no adapters), or vllm for a GPU "
        "(needs `pip install vllm`; LoRA adapters only, at most max_loaded_adapters per batch).")
    n_ctx: int = Field(2048, gt=0, description="llamacpp: context window in tokens.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="vllm: share of the GPU's memory vLLM "
                                          "takes for the weights, the adapters and its KV cache.")
    max_lora_rank: int = Field(64, gt=0, description="vllm: largest LoRA rank an adapter may have (vLLM reserves "
                               "adapter slots of this rank; one of the ranks vLLM supports: 8, 16, 32, 64, 128, "
                               "256, ...). Adapters above it are refused at load.")
    max_model_len: int | None = Field(None, gt=0, description="vllm: longest prompt + answer in tokens (default: "
                                      "the model's context window; lower it to fit a smaller GPU).")
    registry_db: str | None = Field(None, description="Model registry database for registry:NAME@ALIAS paths "
                                    "(default: $TUNEFORGE_REGISTRY, else runs/../registry.db).")
    registry_poll_s: float = Field(1.0, gt=0, le=60, description="How often the registry is polled for alias "
                                   "moves (a promote or rollback reaches the server within about this).")
    host: str = Field("127.0.0.1", description="Address to listen on (127.0.0.1: this machine only).")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on (0: any free port).")
    state_dir: str = Field("serve-state", description="Folder of the SQLite database (keys, usage, request log, "
                           "feedback) and the admin key file; relative to the config file.")
    database_url: str | None = Field(
        None, description="Keep keys, usage, rate limits, the request log and feedback in this database instead of "
        "the SQLite file in state_dir, so several replicas behind a load balancer share them: "
        "postgresql://USER@HOST[:PORT]/DB (psycopg 3; the password may come from $PGPASSWORD or ~/.pgpass rather "
        "than the file). null: state_dir/serve.db.")
    adapters: list[AdapterEntry] = Field(default_factory=list, description="Adapters loaded at start.")
    max_loaded_adapters: int = Field(8, gt=0, description="Most adapters in memory; the least recently used is "
                                     "unloaded to make room.")
    batching: Batching = Field(default_factory=Batching, description="Dynamic batching.")
    limits: Limits = Field(default_factory=Limits, description="Request size and rate defaults.")
    guardrails: Guardrails = Field(default_factory=Guardrails, description="Guardrails for the base and for "
                                   "adapters without their own.")
    base_price_per_1k_tokens: float = Field(0.0, ge=0, description="Cost per 1000 tokens on the base model.")
    request_log: RequestLog = Field(default_factory=RequestLog, description="The request log.")
    cache_size: int = Field(0, ge=0, description="Temperature-0 response cache entries (0: off).")
    rag: RagSettings | None = Field(None, description="Retrieval-augmented chat: indexes served as model names "
                                    "rag/INDEX/MODEL (serve/rag_route.py).")

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is not None:  # the message never repeats the value: it may hold a password
            from tuneforge.serve.db.store_schema import BACKENDS, database_url

            try:
                backend = database_url(value).get_backend_name() if "://" in value else None
            except Exception:  # noqa: BLE001 - sqlalchemy's ArgumentError/ValueError: not a URL
                backend = None
            if backend not in BACKENDS:
                raise ValueError("not a database URL of " + " or ".join(BACKENDS) + " (e.g. "
                                 "postgresql://USER@HOST:5432/DB)")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> ServeConfig:
        names = [a.name for a in self.adapters]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"adapter names must be unique: {', '.join(duplicates)}")
        # A followed alias needs room for production and canary side by side.
        needed = sum(2 if a.path.startswith(REGISTRY_PREFIX) else 1 for a in self.adapters)
        if needed > self.max_loaded_adapters:
            raise ValueError(f"the adapters need {needed} slots (a registry alias takes 2: production and canary) "
                             f"but max_loaded_adapters is {self.max_loaded_adapters}")
        vllm_only = sorted({"gpu_memory_utilization", "max_lora_rank", "max_model_len"} & self.model_fields_set)
        if vllm_only and self.engine != "vllm":
            raise ValueError(f"{', '.join(vllm_only)}: vllm settings, but engine is {self.engine}; set `engine: "
                             "vllm` or remove them")
        if self.engine == "llamacpp" and self.adapters:
            raise ValueError("engine llamacpp serves one GGUF file and no adapters; merge the adapter and export it "
                             "(`tuneforge export RUN --gguf`), or use engine tuneforge")
        for adapter in self.adapters:
            if adapter.auto_rollback and not adapter.path.startswith(REGISTRY_PREFIX):
                raise ValueError(f"adapter {adapter.name}: auto_rollback needs a registry:NAME@ALIAS path")
            if adapter.auto_rollback and not self.request_log.enabled:
                raise ValueError(f"adapter {adapter.name}: auto_rollback judges the request log; enable it")
        return self


def load_serve_config(path: str | Path) -> ServeConfig:
    """Parse and validate a serve YAML; relative paths (adapters, state_dir) resolve against its folder."""
    path = Path(path)
    data, lines = _read_yaml(path)
    try:
        cfg = ServeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("invalid serve config:\n" + _format_errors(exc, str(path), lines, {})) from None
    root = path.resolve().parent

    def rebase(value: str) -> str:
        candidate = Path(value).expanduser()
        return str(candidate if candidate.is_absolute() else root / candidate)

    cfg.state_dir = rebase(cfg.state_dir)
    if cfg.request_log.key_file:
        cfg.request_log.key_file = rebase(cfg.request_log.key_file)
    for adapter in cfg.adapters:
        if not adapter.path.startswith(REGISTRY_PREFIX):
            adapter.path = rebase(adapter.path)
    if cfg.registry_db:
        cfg.registry_db = rebase(cfg.registry_db)
    if cfg.rag is not None:
        cfg.rag.indexes = {name: rebase(folder) for name, folder in cfg.rag.indexes.items()}
        reranker = cfg.rag.reranker
        if reranker and (reranker.startswith((".", "/", "~")) or (root / reranker).exists()):
            cfg.rag.reranker = rebase(reranker)  # a folder; anything else is a hub id
    if Path(cfg.base).expanduser().exists() or cfg.base.startswith((".", "/", "~")):
        cfg.base = rebase(cfg.base)
    return cfg


def config_for_run(run: str | Path, runs_dir: str | Path = "runs", **overrides) -> ServeConfig:
    """Zero-config: serve a run's base with its adapter under the run's name (or its merged model)."""
    from tuneforge.models.ref import parse_model_ref

    ref = parse_model_ref(str(run), runs_dir=runs_dir)
    if ref.kind != "run":
        raise ConfigError(f"{run}: not a run directory or a serve config",
                          hint="pass a run (runs/NAME with manifest.json) or a serve YAML file")
    run_dir = Path(ref.run_dir)
    adapter = run_dir / "adapter"
    # The adapter on its base even when a merged copy exists: the base weights are then shared with every other
    # adapter loaded later, and clients can compare base and tuned side by side.
    if (adapter / "adapter_config.json").is_file() and ref.base is not None:
        fields = {"base": ref.base.source, "adapters": [{"name": run_dir.name, "path": str(adapter)}]}
    else:
        fields = {"base": ref.path, "base_name": run_dir.name}
    fields["state_dir"] = str(run_dir / "serve")
    fields.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ServeConfig.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError(f"{run}: cannot serve this run:\n" + _format_errors(exc, str(run), {}, {})) from None
