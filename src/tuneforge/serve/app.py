"""The OpenAI-compatible routes (thin): auth, limits, guardrails and logging around the serving engine.

    GET  /health                     no key; 503 while the model loads
    GET  /v1/models                  the base and the adapters this key may use
    POST /v1/chat/completions        chat; stream=true sends SSE chunks ending in `data: [DONE]`;
                                     model rag/INDEX/MODEL answers from an index with sources (serve/rag_route.py)
    POST /v1/completions             raw prompt
    POST /v1/feedback                rating / correction / preferred answer for a response id
    GET  /metrics                    Prometheus (admin key)
    GET|POST /admin/adapters, DELETE /admin/adapters/{name}   adapter pool at run time (admin key)
    GET  /admin/registry/{model}/stats   live production vs canary numbers of a registry-followed model (admin key)

Models named `registry:NAME@ALIAS` in the config follow the registry (serve/follow.py): every response of such a
model carries the version that answered (`x-tuneforge-model-version`, `system_fingerprint` NAME@vN, the request
log's version/arm columns and the metrics' version label).
"""
from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tuneforge.errors import TuneforgeError
from tuneforge.serve.config import REGISTRY_PREFIX, Guardrails, ServeConfig
from tuneforge.serve.engine import AdapterRefused, Job, ServingEngine
from tuneforge.serve.follow import Follower, version_stats
from tuneforge.serve.guardrails import (
    check_input,
    check_output,
    json_instruction,
    json_problem,
    validate_response_format,
)
from tuneforge.serve.limits import RateLimiter
from tuneforge.serve.metrics import ServeMetrics
from tuneforge.serve.protocol import (
    AdapterLoad,
    ApiError,
    ChatRequest,
    CompletionRequest,
    FeedbackRequest,
    parse_body,
)
from tuneforge.serve.rag_route import RagRoutes
from tuneforge.serve.store import ApiKey, Store


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
    limiter: RateLimiter = field(default_factory=RateLimiter)
    served: Served | None = None
    load_error: str | None = None
    cache: OrderedDict = field(default_factory=OrderedDict)
    cache_lock: threading.Lock = field(default_factory=threading.Lock)
    follower: Follower | None = None


def create_app(cfg: ServeConfig, store: Store, loader) -> FastAPI:
    """`loader()` returns (InferenceEngine, base name, base weights sha256); it runs in a thread at start-up so
    /health answers (503 'loading') while the weights load."""
    state = State(cfg, store)
    rag = RagRoutes(cfg.rag)

    def load() -> None:
        try:
            from tuneforge.models.inference import stop_token_ids

            engine, base_name, base_sha = loader()
            serving = ServingEngine(engine, max_loaded=cfg.max_loaded_adapters,
                                    max_batch_size=cfg.batching.max_batch_size, window_ms=cfg.batching.window_ms,
                                    max_queue=cfg.batching.max_queue, base_sha256=base_sha,
                                    on_batch=state.metrics.batch_size.observe)
            for adapter in cfg.adapters:
                if not adapter.path.startswith(REGISTRY_PREFIX):
                    serving.control(lambda a=adapter: serving.register(a.name, a.path)).result()
            follower = Follower(cfg.adapters, serving, db=cfg.registry_db, poll_s=cfg.registry_poll_s,
                                request_store=store if cfg.request_log.enabled else None, metrics=state.metrics)
            follower.start()
            state.follower = follower
            state.metrics.loaded_adapters.set(len(serving.loaded))
            if hasattr(engine, "stop_ids"):  # engine llamacpp: its own tokenizer and end-of-generation ids
                stop_ids, decode = engine.stop_ids, engine.decode
            else:
                stop_ids = set(stop_token_ids(engine.model, engine.tokenizer))
                decode = lambda ids: engine.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
            state.served = Served(serving, cfg.base_name or base_name, stop_ids, decode)
        except Exception as exc:  # noqa: BLE001 - reported by /health and every route, the process stays up
            state.load_error = str(exc)

    @asynccontextmanager
    async def lifespan(_app):
        threading.Thread(target=load, name="tuneforge-serve-load", daemon=True).start()
        yield
        if state.follower is not None:
            state.follower.close()
        if state.served is not None:
            state.served.serving.close()

    app = FastAPI(title="tuneforge serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.tuneforge = state

    @app.middleware("http")
    async def _errors(request: Request, call_next):
        request.state.request_id = request.headers.get("x-request-id") or "req_" + uuid.uuid4().hex[:16]
        size = request.headers.get("content-length")
        if size and size.isdigit() and int(size) > cfg.limits.max_body_bytes:
            return ApiError(413, f"the request body is {size} bytes; the limit is {cfg.limits.max_body_bytes}",
                            code="body_too_large").response(request.state.request_id)
        try:
            response = await call_next(request)
        except ApiError as error:
            response = error.response()
        except Exception as exc:  # noqa: BLE001 - a server fault is a 500 in OpenAI's shape, never a dropped socket
            response = ApiError(500, f"internal error: {type(exc).__name__}: {exc}", code="internal_error").response()
        response.headers["x-request-id"] = request.state.request_id
        return response

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError):
        if not getattr(request.state, "counted", False):  # refusals inside generate() counted themselves
            state.metrics.requests.labels(request.url.path, getattr(request.state, "model", ""), "",
                                          str(error.status)).inc()
        return error.response(getattr(request.state, "request_id", None))

    @app.exception_handler(404)
    async def _not_found(request: Request, _exc):
        return ApiError(404, f"no route {request.method} {request.url.path}", code="unknown_route").response()

    @app.exception_handler(405)
    async def _bad_method(request: Request, _exc):
        return ApiError(405, f"{request.method} is not allowed on {request.url.path}",
                        code="method_not_allowed").response()

    # ------------------------------------------------------------------ helpers
    def served() -> Served:
        if state.served is None:
            if state.load_error:
                raise ApiError(503, f"the model failed to load: {state.load_error}", code="model_load_failed")
            raise ApiError(503, "the model is still loading", code="loading", headers={"retry-after": "5"})
        return state.served

    def authenticate(request: Request, *, admin: bool = False) -> ApiKey:
        header = request.headers.get("authorization", "")
        secret = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not secret:
            raise ApiError(401, "no API key: send `Authorization: Bearer KEY`", code="missing_api_key")
        key = store.lookup(secret)
        if key is None:
            raise ApiError(401, "invalid or revoked API key", code="invalid_api_key")
        if admin and not key.admin:
            raise ApiError(403, "this route needs an admin key", code="admin_required")
        request.state.key = key
        return key

    async def body(request: Request) -> bytes:
        raw = await request.body()
        if len(raw) > cfg.limits.max_body_bytes:
            raise ApiError(413, f"the request body is {len(raw)} bytes; the limit is {cfg.limits.max_body_bytes}",
                           code="body_too_large")
        return raw

    def guard_for(model: str) -> Guardrails:
        model = model.split("@")[0]  # a pinned registry version (NAME@vN) has its followed model's guardrails
        for adapter in cfg.adapters:
            if adapter.name == model and adapter.guardrails is not None:
                return adapter.guardrails
        return cfg.guardrails

    def price_for(model: str) -> float:
        model = model.split("@")[0]
        for adapter in cfg.adapters:
            if adapter.name == model:
                return adapter.price_per_1k_tokens
        return cfg.base_price_per_1k_tokens

    def resolve_model(name: str, key: ApiKey, s: Served) -> str | None:
        if name != s.base_name and name not in s.serving.known:
            raise ApiError(404, f"the model {name!r} does not exist", code="model_not_found", param="model")
        if not key.allows(name):
            raise ApiError(403, f"this key may not use the model {name!r}", code="model_not_allowed", param="model")
        return None if name == s.base_name else name

    def hit(model: str, request_id: str, hits: list[str], all_hits: list[str]) -> None:
        for name in hits:
            state.metrics.guardrail_hits.labels(model, name).inc()
            all_hits.append(name)

    # ------------------------------------------------------------------ routes
    @app.get("/health")
    async def health():
        if state.served is None:
            status = "failed" if state.load_error else "loading"
            return JSONResponse({"status": status, "error": state.load_error}, status_code=503)
        s = state.served
        out = {"status": "ok", "base": s.base_name, "adapters": list(s.serving.loaded), "queue": s.serving.pending()}
        if state.follower:
            out["registry"] = {name: {"production": r.production.version,
                                      "canary": r.canary.version if r.canary else None, "canary_weight": r.weight}
                               for name, r in state.follower.routes.items()}
            out["registry_error"] = state.follower.last_error
        return out

    @app.get("/v1/models")
    async def models(request: Request):
        key = authenticate(request)
        s = served()
        # Followed registry models by their served name; their versions (NAME@vN) stay reachable but unlisted.
        names = [s.base_name, *[n for n in s.serving.known if "@" not in n],
                 *[n for n in (state.follower.routes if state.follower else {}) if n not in s.serving.known]]
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "tuneforge",
                 "parent": None if n == s.base_name else s.base_name} for n in names if key.allows(n)]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        key = authenticate(request)
        req = parse_body(await body(request), ChatRequest)
        problem = validate_response_format(req.response_format)
        if problem:
            raise ApiError(400, problem, code="invalid_response_format", param="response_format")
        if rag.handles(req.model):
            return await rag.chat(request, key, req, generate)
        return await generate(request, key, req, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        key = authenticate(request)
        req = parse_body(await body(request), CompletionRequest)
        if isinstance(req.prompt, list):
            if len(req.prompt) != 1:
                raise ApiError(400, "one prompt per request", code="unsupported", param="prompt")
            req.prompt = req.prompt[0]
        return await generate(request, key, req, chat=False)

    async def generate(request: Request, key: ApiKey, req, *, chat: bool):
        s = served()
        request.state.model = req.model
        request_id = request.state.request_id
        route = state.follower.routes.get(req.model) if state.follower else None
        version, arm, fingerprint = None, None, None
        if route is not None:
            if not key.allows(req.model):
                raise ApiError(403, f"this key may not use the model {req.model!r}", code="model_not_allowed",
                               param="model")
            # Sticky: one user (or one client-chosen request id) always lands on the same side of the split.
            target = route.pick(req.user or request.headers.get("x-request-id") or request_id)
            adapter, version, arm = target.adapter, target.version, target.arm
            fingerprint = f"{route.registry_name}@v{version}"
        else:
            pinned = PINNED.match(req.model)
            if pinned and state.follower and pinned[1] in state.follower.routes and req.model not in s.serving.known:
                try:  # a client may pin a registered version: loaded on first use
                    await asyncio.to_thread(state.follower.pin, pinned[1], int(pinned[2]))
                except TuneforgeError as exc:
                    raise ApiError(404, f"the model {req.model!r} cannot be served: {exc.message}",
                                   code="model_not_found", param="model") from None
            adapter = resolve_model(req.model, key, s)
            if adapter and "@v" in adapter:  # a pinned version of a followed model
                version, arm, fingerprint = int(adapter.rsplit("@v", 1)[1]), "pinned", adapter
        version_label = str(version) if version is not None else ""
        response_id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        guard = guard_for(req.model)
        hits: list[str] = []
        started = time.perf_counter()

        def refuse(status: int, message: str, code: str, param: str | None = None, headers=None):
            store_row(status, error=message)
            return ApiError(status, message, code=code, param=param, headers=headers)

        def store_row(status: int, **extra) -> None:
            if cfg.request_log.enabled:
                row = dict(id=extra.pop("id", response_id if status == 200 else request_id), key_id=key.id,
                           model=req.model, adapter=adapter, route=request.url.path, status=status,
                           prompt=prompt_log, guardrails=hits or None, version=version, arm=arm, **extra)
                if cfg.request_log.redact_pii:
                    from tuneforge.data.pii import redact

                    row["prompt"] = redact(row["prompt"] or "")[0]
                    if row.get("response"):
                        row["response"] = redact(row["response"])[0]
                store.log_request(**row)
            state.metrics.requests.labels(request.url.path, req.model, version_label, str(status)).inc()
            request.state.counted = True

        # Input guardrails on every user-written text.
        if chat:
            messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                        for m in req.messages]
            for message in messages:
                if message["role"] == "user":
                    checked = check_input(message["content"], guard)
                    hit(req.model, request_id, checked.hits, hits)
                    message["content"] = checked.text
                    if checked.refusal:
                        prompt_log = json.dumps(messages)
                        raise refuse(400, checked.refusal, checked.code, "messages")
            prompt_log = json.dumps(messages)
        else:
            checked = check_input(req.prompt, guard)
            hit(req.model, request_id, checked.hits, hits)
            prompt_log = json.dumps(checked.text)
            if checked.refusal:
                raise refuse(400, checked.refusal, checked.code, "prompt")
            messages = checked.text

        engine = s.serving.engine
        try:
            prompt_ids = engine.prompt_ids(messages)
        except Exception as exc:  # noqa: BLE001 - chat templates raise anything (jinja, role-order checks)
            raise refuse(400, f"the model's chat template cannot render these messages: {exc}",
                         "cannot_render_prompt", "messages" if chat else "prompt") from None
        if not prompt_ids:
            raise refuse(400, "the prompt is empty", "empty_prompt", "messages" if chat else "prompt")
        if guard.max_prompt_tokens and len(prompt_ids) > guard.max_prompt_tokens:
            hit(req.model, request_id, ["max_prompt_tokens"], hits)
            raise refuse(413, f"the prompt has {len(prompt_ids)} tokens; the limit is {guard.max_prompt_tokens}",
                         "prompt_too_long", "messages" if chat else "prompt")
        max_tokens = req.max_completion_tokens or req.max_tokens or cfg.limits.max_tokens_default
        if max_tokens > cfg.limits.max_tokens_limit:
            raise refuse(422, f"max_tokens {max_tokens} is above this server's limit {cfg.limits.max_tokens_limit}",
                         "max_tokens_too_large", "max_tokens")

        # Limits: charge the worst case now, refund the unused part when the answer is known.
        budget = len(prompt_ids) + max_tokens
        if key.daily_tokens is not None and store.tokens_today(key.id) + budget > key.daily_tokens:
            raise refuse(429, f"daily token quota of {key.daily_tokens} reached", "quota_exceeded",
                         headers={"retry-after": str(seconds_to_midnight())})
        decision = state.limiter.take(key.id, key.rpm or cfg.limits.default_rpm, key.tpm or cfg.limits.default_tpm,
                                      budget)
        if not decision.allowed:
            raise refuse(429, decision.reason, "rate_limit_exceeded",
                         headers={**decision.headers, "retry-after": str(decision.retry_after)})
        if s.serving.pending() >= cfg.batching.max_queue:
            state.limiter.refund(key.id, budget)
            raise refuse(503, "the server is overloaded; retry shortly", "overloaded", headers={"retry-after": "1"})

        temperature = req.temperature
        rf = getattr(req, "response_format", None)
        scored = guard.min_mean_logprob is not None
        buffered = bool(rf and rf.get("type") != "text") or guard.output_pii != "off" or bool(guard.blocklist) \
            or bool(guard.output_regex) or (scored and guard.low_confidence == "refuse")
        job = Job(prompt_ids, adapter, max_tokens, temperature, req.top_p, req.seed, req.stops(), score=scored)
        # Keyed by the adapter, not the requested name: a followed name answers from different versions over time.
        cache_key = (req.model, adapter, tuple(prompt_ids), max_tokens, job.stop) \
            if temperature == 0 and cfg.cache_size else None
        confidence: dict = {}

        def judge_confidence(answered: Job) -> bool:
            """Record the answer's mean log-prob; True (flagged, counted) when it is below the threshold."""
            confidence["mean_logprob"] = answered.mean_logprob
            low = scored and answered.mean_logprob is not None and answered.mean_logprob < guard.min_mean_logprob
            confidence["low"] = low
            if low:
                hit(req.model, request_id, ["low_confidence"], hits)
                state.metrics.low_confidence.labels(req.model, version_label).inc()
            return low

        def usage(completion) -> dict:
            return {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
                    "total_tokens": completion.prompt_tokens + completion.completion_tokens}

        def account(completion, text: str, finish: str) -> None:
            latency = time.perf_counter() - started
            used = completion.prompt_tokens + completion.completion_tokens
            state.limiter.refund(key.id, budget - used)
            store.add_tokens(key.id, used)
            m = state.metrics
            m.latency.labels(req.model, version_label).observe(latency)
            queue_s = (job.started - job.enqueued) if job.started else 0.0
            ttft = (job.first_token - job.enqueued + (job.enqueued - started)) if job.first_token else latency
            m.queue.labels(req.model).observe(queue_s)
            m.ttft.labels(req.model, version_label).observe(ttft)
            m.prompt_tokens.labels(req.model, version_label).inc(completion.prompt_tokens)
            m.completion_tokens.labels(req.model, version_label).inc(completion.completion_tokens)
            m.cost.labels(req.model, key.id).inc(used / 1000 * price_for(req.model))
            store_row(200, response=text, prompt_tokens=completion.prompt_tokens,
                      completion_tokens=completion.completion_tokens, latency_s=latency, queue_s=queue_s,
                      ttft_s=ttft, finish_reason=finish, mean_logprob=confidence.get("mean_logprob"),
                      low_confidence=int(confidence["low"]) if "low" in confidence else None)

        async def run(job: Job):
            if cache_key is not None:
                with state.cache_lock:
                    cached = state.cache.get(cache_key)
                    if cached is not None:
                        state.cache.move_to_end(cache_key)
                state.metrics.cache.labels("hit" if cached is not None else "miss").inc()
                if cached is not None:
                    job.mean_logprob = cached[1]
                    return cached[0]
            try:
                completion = await asyncio.wrap_future(s.serving.submit(job))
            except TuneforgeError as exc:
                raise refuse(404 if "no adapter" in exc.message else 503, exc.message, "engine_error") from None
            if cache_key is not None:
                with state.cache_lock:
                    state.cache[cache_key] = (completion, job.mean_logprob)
                    while len(state.cache) > cfg.cache_size:
                        state.cache.popitem(last=False)
            return completion

        async def finished_text():
            """Generate (non-streaming), then output guardrails and the one constrained JSON retry."""
            completion = await run(job)
            text = completion.text
            if rf and rf.get("type") != "text":
                problem = json_problem(text, rf)
                if problem:
                    hit(req.model, request_id, ["response_format_retry"], hits)
                    retry_messages = [{"role": "system", "content": json_instruction(rf)}, *[
                        m for m in messages if m["role"] != "system"]]
                    retry = Job(engine.prompt_ids(retry_messages), adapter, max_tokens, 0.0, 1.0, None, job.stop,
                                score=scored)
                    completion = await run(retry)
                    job.mean_logprob = retry.mean_logprob
                    text = completion.text
                    problem = json_problem(text, rf)
                    if problem:
                        hit(req.model, request_id, ["response_format"], hits)
                        raise refuse(422, f"the model's answer failed response_format after one constrained retry: "
                                     f"{problem}", "response_format_failed", "response_format")
            checked = check_output(text, guard)
            hit(req.model, request_id, checked.hits, hits)
            if checked.refusal:
                raise refuse(422, checked.refusal, checked.code)
            if judge_confidence(job) and guard.low_confidence == "refuse":
                raise refuse(422, f"the answer's mean token log-probability {job.mean_logprob:.3f} is below this "
                             f"model's min_mean_logprob {guard.min_mean_logprob}; escalate to a person",
                             "low_confidence")
            return completion, checked.text

        created = int(time.time())
        headers = dict(decision.headers)
        if version is not None:
            headers["x-tuneforge-model-version"] = str(version)
            headers["x-tuneforge-model-arm"] = arm

        def confidence_fields() -> dict:
            if not scored:
                return {}
            mean = confidence.get("mean_logprob")
            return {"low_confidence": bool(confidence.get("low")),
                    "mean_logprob": round(mean, 4) if mean is not None else None}

        if not req.stream:
            completion, text = await finished_text()
            account(completion, text, completion.finish_reason)
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": text},
                          "finish_reason": completion.finish_reason, "logprobs": None}
            else:
                choice = {"index": 0, "text": text, "finish_reason": completion.finish_reason, "logprobs": None}
            body_out = {"id": response_id, "object": "chat.completion" if chat else "text_completion",
                        "created": created, "model": req.model, "choices": [choice], "usage": usage(completion),
                        "system_fingerprint": fingerprint, **confidence_fields()}
            if confidence.get("low"):
                headers["x-tuneforge-low-confidence"] = "true"
            return JSONResponse(body_out, headers=headers)

        loop = asyncio.get_running_loop()
        tokens: asyncio.Queue = asyncio.Queue()
        if not buffered:
            job.on_token = lambda token: loop.call_soon_threadsafe(tokens.put_nowait, token)
        include_usage = bool((req.stream_options or {}).get("include_usage"))

        def chunk(delta_text: str | None, finish: str | None, first: bool = False) -> str:
            if chat:
                delta = {"role": "assistant", "content": ""} if first else (
                    {"content": delta_text} if delta_text is not None else {})
                choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": 0, "text": delta_text or "", "finish_reason": finish, "logprobs": None}
            payload = {"id": response_id, "object": "chat.completion.chunk" if chat else "text_completion",
                       "created": created, "model": req.model, "choices": [choice], "system_fingerprint": fingerprint}
            if finish is not None:
                payload.update(confidence_fields())  # known only at the end: the last chunk carries the flag
            if include_usage:
                payload["usage"] = None
            return f"data: {json.dumps(payload)}\n\n"

        holdback = max((len(x) for x in job.stop), default=1) - 1

        async def events():
            if chat:
                yield chunk(None, None, first=True)
            sent = ""
            try:
                if buffered:
                    completion, text = await finished_text()
                else:
                    task = asyncio.ensure_future(run(job))
                    produced: list[int] = []
                    done_row = False
                    while not task.done() or not tokens.empty():
                        getter = asyncio.ensure_future(tokens.get())
                        await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                        if not getter.done():
                            getter.cancel()
                            continue
                        token = getter.result()
                        if done_row:
                            continue
                        if token in s.stop_ids or len(produced) >= max_tokens:
                            done_row = True
                            continue
                        produced.append(token)
                        partial = s.decode(produced)
                        cuts = [partial.find(x) for x in job.stop if x in partial]
                        if cuts:
                            partial, done_row = partial[: min(cuts)], True
                        safe = partial if done_row else partial[: max(0, len(partial) - holdback)]
                        if safe.endswith("\ufffd"):
                            continue
                        if len(safe) > len(sent) and safe.startswith(sent):
                            yield chunk(safe[len(sent):], None)
                            sent = safe
                    completion = await task
                    text = completion.text
                    judge_confidence(job)
                if len(text) > len(sent) or not text.startswith(sent):
                    yield chunk(text.removeprefix(sent), None)
                account(completion, text, completion.finish_reason)
                yield chunk(None, completion.finish_reason)
                if include_usage:
                    payload = {"id": response_id, "object": "chat.completion.chunk" if chat else "text_completion",
                               "created": created, "model": req.model, "choices": [], "usage": usage(completion)}
                    yield f"data: {json.dumps(payload)}\n\n"
            except ApiError as error:
                body_err = {"error": {"message": error.message, "type": "invalid_request_error", "param": error.param,
                                      "code": error.code}}
                yield f"data: {json.dumps(body_err)}\n\n"
            except Exception as exc:  # noqa: BLE001 - the stream has started; report in-band, keep the server up
                store_row(500, error=str(exc))
                body_err = {"error": {"message": str(exc), "type": "server_error", "param": None,
                                      "code": "internal_error"}}
                yield f"data: {json.dumps(body_err)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={
            **headers, "cache-control": "no-cache"})

    @app.post("/v1/feedback")
    async def feedback(request: Request):
        key = authenticate(request)
        req = parse_body(await body(request), FeedbackRequest)
        row = store.request(req.response_id)
        if row is None or row["status"] != 200:
            raise ApiError(404, f"no response with id {req.response_id!r}", code="response_not_found",
                           param="response_id")
        if row["key_id"] != key.id and not key.admin:
            raise ApiError(403, "feedback on another key's response", code="not_your_response")
        if req.rating is None and not req.correction and not req.preferred:
            raise ApiError(400, "give a rating, a correction or a preferred answer", code="empty_feedback")
        feedback_id = store.add_feedback(req.response_id, key.id, rating=req.rating, correction=req.correction,
                                         preferred=req.preferred, comment=req.comment)
        return {"id": feedback_id, "object": "feedback", "response_id": req.response_id}

    @app.get("/metrics")
    async def metrics(request: Request):
        authenticate(request, admin=True)
        if state.served is not None:
            state.metrics.loaded_adapters.set(len(state.served.serving.loaded))
        for name, r in (state.follower.routes if state.follower else {}).items():
            state.metrics.served_version.labels(name, "production").set(r.production.version)
            state.metrics.served_version.labels(name, "canary").set(r.canary.version if r.canary else 0)
            state.metrics.canary_weight.labels(name).set(r.weight)
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/admin/registry/{model}/stats")
    async def registry_stats(model: str, request: Request, window_s: float | None = None):
        authenticate(request, admin=True)
        route = state.follower.routes.get(model) if state.follower else None
        if route is None:
            raise ApiError(404, f"{model!r} is not a registry-followed model on this server", code="model_not_found")
        return {"model": model, "registry_model": route.registry_name, "production": route.production.version,
                "canary": route.canary.version if route.canary else None, "canary_weight": route.weight,
                "window_s": window_s, "versions": version_stats(store, model, window_s=window_s)}

    @app.get("/admin/adapters")
    async def list_adapters(request: Request):
        authenticate(request, admin=True)
        s = served()
        return {"base": s.base_name, "max_loaded": s.serving.max_loaded,
                "adapters": [{"name": n, "path": str(p), "loaded": n in s.serving.loaded}
                             for n, p in s.serving.known.items()]}

    @app.post("/admin/adapters")
    async def load_adapter(request: Request):
        authenticate(request, admin=True)
        req = parse_body(await body(request), AdapterLoad)
        s = served()
        if req.name == s.base_name or req.name in s.serving.known:
            raise ApiError(400, f"a model named {req.name!r} is already served", code="name_taken", param="name")
        try:
            await asyncio.wrap_future(s.serving.control(lambda: s.serving.register(req.name, req.path)))
        except AdapterRefused as exc:
            raise ApiError(400, f"adapter refused: {exc}", code="adapter_refused", param="path") from None
        except TuneforgeError as exc:
            raise ApiError(400, str(exc), code="adapter_error", param="path") from None
        state.metrics.loaded_adapters.set(len(s.serving.loaded))
        return {"name": req.name, "loaded": True}

    @app.delete("/admin/adapters/{name}")
    async def unload_adapter(name: str, request: Request):
        authenticate(request, admin=True)
        s = served()
        if name not in s.serving.known:
            raise ApiError(404, f"no adapter named {name!r}", code="model_not_found")
        await asyncio.wrap_future(s.serving.control(lambda: s.serving.unregister(name)))
        state.metrics.loaded_adapters.set(len(s.serving.loaded))
        return {"name": name, "loaded": False}

    return app


PINNED = re.compile(r"^(.+)@v(\d+)$")


def seconds_to_midnight() -> int:
    now = time.time()
    return int(86400 - now % 86400) + 1
