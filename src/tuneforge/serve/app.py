"""The OpenAI-compatible routes (thin): loading, errors, auth and the admin routes; a completion request's steps
(routing, guardrails, limits, generation, accounting, streaming) are in serve/completion.py.

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
import threading
import uuid
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tuneforge.errors import TuneforgeError
from tuneforge.serve.completion import generate
from tuneforge.serve.config import REGISTRY_PREFIX, ServeConfig
from tuneforge.serve.db.store import Store
from tuneforge.serve.engines.engine import AdapterRefused, ServingEngine
from tuneforge.serve.follow import Follower, version_stats
from tuneforge.serve.guardrails import validate_response_format
from tuneforge.serve.protocol import (
    AdapterLoad,
    ApiError,
    ChatRequest,
    CompletionRequest,
    FeedbackRequest,
    parse_body,
)
from tuneforge.serve.rag_route import RagRoutes
from tuneforge.serve.state import Served, State


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
                                    max_queue=cfg.batching.max_queue, continuous=cfg.batching.continuous,
                                    base_sha256=base_sha,
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
        key = state.authenticate(request)
        s = state.ready()
        # Followed registry models by their served name; their versions (NAME@vN) stay reachable but unlisted.
        names = [s.base_name, *[n for n in s.serving.known if "@" not in n],
                 *[n for n in (state.follower.routes if state.follower else {}) if n not in s.serving.known]]
        allowed = [n for n in names if key.allows(n)]
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "tuneforge",
                 "parent": None if n == s.base_name else s.base_name} for n in allowed]
        # Retrieval-augmented names answer with the model after the index: listed for the models this key may use.
        data += [{"id": n, "object": "model", "created": 0, "owned_by": "tuneforge", "parent": n.split("/", 2)[2]}
                 for n in rag.model_names(allowed)]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        key = state.authenticate(request)
        req = parse_body(await state.body(request), ChatRequest)
        problem = validate_response_format(req.response_format)
        if problem:
            raise ApiError(400, problem, code="invalid_response_format", param="response_format")
        if rag.handles(req.model):
            return await rag.chat(request, key, req, partial(generate, state))
        return await generate(state, request, key, req, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        key = state.authenticate(request)
        req = parse_body(await state.body(request), CompletionRequest)
        if isinstance(req.prompt, list):
            if len(req.prompt) != 1:
                raise ApiError(400, "one prompt per request", code="unsupported", param="prompt")
            req.prompt = req.prompt[0]
        return await generate(state, request, key, req, chat=False)

    @app.post("/v1/feedback")
    async def feedback(request: Request):
        key = state.authenticate(request)
        req = parse_body(await state.body(request), FeedbackRequest)
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
        state.authenticate(request, admin=True)
        if state.served is not None:
            state.metrics.loaded_adapters.set(len(state.served.serving.loaded))
        for name, r in (state.follower.routes if state.follower else {}).items():
            state.metrics.served_version.labels(name, "production").set(r.production.version)
            state.metrics.served_version.labels(name, "canary").set(r.canary.version if r.canary else 0)
            state.metrics.canary_weight.labels(name).set(r.weight)
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/admin/registry/{model}/stats")
    async def registry_stats(model: str, request: Request, window_s: float | None = None):
        state.authenticate(request, admin=True)
        route = state.follower.routes.get(model) if state.follower else None
        if route is None:
            raise ApiError(404, f"{model!r} is not a registry-followed model on this server", code="model_not_found")
        return {"model": model, "registry_model": route.registry_name, "production": route.production.version,
                "canary": route.canary.version if route.canary else None, "canary_weight": route.weight,
                "window_s": window_s, "versions": version_stats(store, model, window_s=window_s)}

    @app.get("/admin/adapters")
    async def list_adapters(request: Request):
        state.authenticate(request, admin=True)
        s = state.ready()
        return {"base": s.base_name, "max_loaded": s.serving.max_loaded,
                "adapters": [{"name": n, "path": str(p), "loaded": n in s.serving.loaded}
                             for n, p in s.serving.known.items()]}

    @app.post("/admin/adapters")
    async def load_adapter(request: Request):
        state.authenticate(request, admin=True)
        req = parse_body(await state.body(request), AdapterLoad)
        s = state.ready()
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
        state.authenticate(request, admin=True)
        s = state.ready()
        if name not in s.serving.known:
            raise ApiError(404, f"no adapter named {name!r}", code="model_not_found")
        await asyncio.wrap_future(s.serving.control(lambda: s.serving.unregister(name)))
        state.metrics.loaded_adapters.set(len(s.serving.loaded))
        return {"name": name, "loaded": False}

    return app


