"""One /v1/chat/completions or /v1/completions request, in the order the server handles it:

1. route: which adapter answers (a registry-followed name picks production or canary, sticky per user; NAME@vN pins
   a version; else the base or a named adapter) and whether this key may use it;
2. input guardrails on every user-written text, then the prompt rendered with the model's own chat template;
3. limits: prompt and max_tokens caps, the daily token quota and the rate limits (the worst case is charged now and
   the unused part refunded once the answer is known), the queue bound;
4. generation through the serving engine (an LRU cache answers repeated greedy requests), then output guardrails,
   response_format validation with one constrained retry and the low-confidence check;
5. accounting (metrics, request log, token usage) and the answer: one JSON body, or SSE chunks ending in
   `data: [DONE]` (buffered when an output check must see the whole answer first).
"""
from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from tuneforge.errors import TuneforgeError
from tuneforge.serve.db.store import ApiKey
from tuneforge.serve.engines.engine import Job
from tuneforge.serve.guardrails import check_input, check_output, json_instruction, json_problem
from tuneforge.serve.protocol import ApiError
from tuneforge.serve.state import State, seconds_to_midnight

PINNED = re.compile(r"^(.+)@v(\d+)$")


async def generate(state: State, request: Request, key: ApiKey, req, *, chat: bool):
    call = Completion(state, request, key, req, chat)
    await call.route()
    call.prepare_prompt()
    call.check_limits()
    call.make_job()
    return await call.respond() if not req.stream else call.stream()


class Completion:
    def __init__(self, state: State, request: Request, key: ApiKey, req, chat: bool):
        self.state, self.request, self.key, self.req, self.chat = state, request, key, req, chat
        self.served = state.ready()
        request.state.model = req.model
        self.request_id = request.state.request_id
        self.response_id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.guard = state.guard_for(req.model)
        self.hits: list[str] = []
        self.started = time.perf_counter()
        self.created = int(time.time())
        self.adapter: str | None = None
        self.version: int | None = None
        self.arm: str | None = None
        self.fingerprint: str | None = None
        self.prompt_log: str | None = None
        self.confidence: dict = {}

    # ------------------------------------------------------------------ 1. route
    async def route(self) -> None:
        state, req, s = self.state, self.req, self.served
        followed = state.follower.routes.get(req.model) if state.follower else None
        if followed is not None:
            if not self.key.allows(req.model):
                raise ApiError(403, f"this key may not use the model {req.model!r}", code="model_not_allowed",
                               param="model")
            # Sticky: one user (or one client-chosen request id) always lands on the same side of the split.
            target = followed.pick(req.user or self.request.headers.get("x-request-id") or self.request_id)
            self.adapter, self.version, self.arm = target.adapter, target.version, target.arm
            self.fingerprint = f"{followed.registry_name}@v{self.version}"
            return
        pinned = PINNED.match(req.model)
        if pinned and state.follower and pinned[1] in state.follower.routes and req.model not in s.serving.known:
            try:  # a client may pin a registered version: loaded on first use
                await asyncio.to_thread(state.follower.pin, pinned[1], int(pinned[2]))
            except TuneforgeError as exc:
                raise ApiError(404, f"the model {req.model!r} cannot be served: {exc.message}",
                               code="model_not_found", param="model") from None
        self.adapter = state.resolve_model(req.model, self.key, s)
        if self.adapter and "@v" in self.adapter:  # a pinned version of a followed model
            self.version, self.arm, self.fingerprint = int(self.adapter.rsplit("@v", 1)[1]), "pinned", self.adapter

    @property
    def version_label(self) -> str:
        return str(self.version) if self.version is not None else ""

    # ------------------------------------------------------------------ bookkeeping shared by every step
    def hit(self, names: list[str]) -> None:
        self.state.count_guardrail_hits(self.req.model, names, self.hits)

    def refuse(self, status: int, message: str, code: str, param: str | None = None, headers=None) -> ApiError:
        """The error to raise for a refusal after routing, logged and counted like an answer."""
        self.store_row(status, error=message)
        return ApiError(status, message, code=code, param=param, headers=headers)

    def store_row(self, status: int, **extra) -> None:
        state, cfg = self.state, self.state.cfg
        if cfg.request_log.enabled:
            row = dict(id=extra.pop("id", self.response_id if status == 200 else self.request_id), key_id=self.key.id,
                       model=self.req.model, adapter=self.adapter, route=self.request.url.path, status=status,
                       prompt=self.prompt_log, guardrails=self.hits or None, version=self.version, arm=self.arm,
                       **extra)
            if cfg.request_log.redact_pii:
                from tuneforge.data.pii import redact

                row["prompt"] = redact(row["prompt"] or "")[0]
                if row.get("response"):
                    row["response"] = redact(row["response"])[0]
            state.store.log_request(**row)
        state.metrics.requests.labels(self.request.url.path, self.req.model, self.version_label, str(status)).inc()
        self.request.state.counted = True

    # ------------------------------------------------------------------ 2. input guardrails and the prompt
    def prepare_prompt(self) -> None:
        req, guard = self.req, self.guard
        param = "messages" if self.chat else "prompt"
        if self.chat:
            messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                        for m in req.messages]
            for message in messages:
                if message["role"] == "user":
                    checked = check_input(message["content"], guard)
                    self.hit(checked.hits)
                    message["content"] = checked.text
                    if checked.refusal:
                        self.prompt_log = json.dumps(messages)
                        raise self.refuse(400, checked.refusal, checked.code, param)
            self.prompt_log = json.dumps(messages)
        else:
            checked = check_input(req.prompt, guard)
            self.hit(checked.hits)
            self.prompt_log = json.dumps(checked.text)
            if checked.refusal:
                raise self.refuse(400, checked.refusal, checked.code, param)
            messages = checked.text
        self.messages = messages
        self.engine = self.served.serving.engine
        try:
            self.prompt_ids = self.engine.prompt_ids(messages)
        except Exception as exc:  # noqa: BLE001 - chat templates raise anything (jinja, role-order checks)
            raise self.refuse(400, f"the model's chat template cannot render these messages: {exc}",
                              "cannot_render_prompt", param) from None
        if not self.prompt_ids:
            raise self.refuse(400, "the prompt is empty", "empty_prompt", param)
        if guard.max_prompt_tokens and len(self.prompt_ids) > guard.max_prompt_tokens:
            self.hit(["max_prompt_tokens"])
            raise self.refuse(413, f"the prompt has {len(self.prompt_ids)} tokens; the limit is "
                              f"{guard.max_prompt_tokens}", "prompt_too_long", param)

    # ------------------------------------------------------------------ 3. limits
    def check_limits(self) -> None:
        state, cfg, key, req = self.state, self.state.cfg, self.key, self.req
        self.max_tokens = req.max_completion_tokens or req.max_tokens or cfg.limits.max_tokens_default
        if self.max_tokens > cfg.limits.max_tokens_limit:
            raise self.refuse(422, f"max_tokens {self.max_tokens} is above this server's limit "
                              f"{cfg.limits.max_tokens_limit}", "max_tokens_too_large", "max_tokens")
        # Charge the worst case now, refund the unused part when the answer is known.
        self.budget = len(self.prompt_ids) + self.max_tokens
        if key.daily_tokens is not None and state.store.tokens_today(key.id) + self.budget > key.daily_tokens:
            raise self.refuse(429, f"daily token quota of {key.daily_tokens} reached", "quota_exceeded",
                              headers={"retry-after": str(seconds_to_midnight())})
        decision = state.limiter.take(key.id, key.rpm or cfg.limits.default_rpm, key.tpm or cfg.limits.default_tpm,
                                      self.budget)
        if not decision.allowed:
            raise self.refuse(429, decision.reason, "rate_limit_exceeded",
                              headers={**decision.headers, "retry-after": str(decision.retry_after)})
        if self.served.serving.pending() >= cfg.batching.max_queue:
            state.limiter.refund(key.id, self.budget)
            raise self.refuse(503, "the server is overloaded; retry shortly", "overloaded",
                              headers={"retry-after": "1"})
        self.headers = dict(decision.headers)
        if self.version is not None:
            self.headers["x-tuneforge-model-version"] = str(self.version)
            self.headers["x-tuneforge-model-arm"] = self.arm

    # ------------------------------------------------------------------ 4. generation and output checks
    def make_job(self) -> None:
        req, guard = self.req, self.guard
        self.response_format = getattr(req, "response_format", None)
        self.scored = guard.min_mean_logprob is not None
        # An output check that must see the whole answer first turns a stream into one buffered answer.
        self.buffered = bool(self.response_format and self.response_format.get("type") != "text") \
            or guard.output_pii != "off" or bool(guard.blocklist) or bool(guard.output_regex) \
            or (self.scored and guard.low_confidence == "refuse")
        self.job = Job(self.prompt_ids, self.adapter, self.max_tokens, req.temperature, req.top_p, req.seed,
                       req.stops(), score=self.scored)
        # Keyed by the adapter, not the requested name: a followed name answers from different versions over time.
        self.cache_key = (req.model, self.adapter, tuple(self.prompt_ids), self.max_tokens, self.job.stop) \
            if req.temperature == 0 and self.state.cfg.cache_size else None

    async def run(self, job: Job):
        state = self.state
        if self.cache_key is not None:
            with state.cache_lock:
                cached = state.cache.get(self.cache_key)
                if cached is not None:
                    state.cache.move_to_end(self.cache_key)
            state.metrics.cache.labels("hit" if cached is not None else "miss").inc()
            if cached is not None:
                job.mean_logprob = cached[1]
                return cached[0]
        try:
            completion = await asyncio.wrap_future(self.served.serving.submit(job))
        except TuneforgeError as exc:
            raise self.refuse(404 if "no adapter" in exc.message else 503, exc.message, "engine_error") from None
        if self.cache_key is not None:
            with state.cache_lock:
                state.cache[self.cache_key] = (completion, job.mean_logprob)
                while len(state.cache) > state.cfg.cache_size:
                    state.cache.popitem(last=False)
        return completion

    def judge_confidence(self, answered: Job) -> bool:
        """Record the answer's mean log-prob; True (flagged, counted) when it is below the threshold."""
        self.confidence["mean_logprob"] = answered.mean_logprob
        low = self.scored and answered.mean_logprob is not None and answered.mean_logprob < self.guard.min_mean_logprob
        self.confidence["low"] = low
        if low:
            self.hit(["low_confidence"])
            self.state.metrics.low_confidence.labels(self.req.model, self.version_label).inc()
        return low

    async def finished_text(self):
        """Generate (non-streaming), then output guardrails and the one constrained JSON retry."""
        job, rf, guard = self.job, self.response_format, self.guard
        completion = await self.run(job)
        text = completion.text
        if rf and rf.get("type") != "text":
            problem = json_problem(text, rf)
            if problem:
                self.hit(["response_format_retry"])
                retry_messages = [{"role": "system", "content": json_instruction(rf)},
                                  *[m for m in self.messages if m["role"] != "system"]]
                retry = Job(self.engine.prompt_ids(retry_messages), self.adapter, self.max_tokens, 0.0, 1.0, None,
                            job.stop, score=self.scored)
                completion = await self.run(retry)
                job.mean_logprob = retry.mean_logprob
                text = completion.text
                problem = json_problem(text, rf)
                if problem:
                    self.hit(["response_format"])
                    raise self.refuse(422, f"the model's answer failed response_format after one constrained retry: "
                                      f"{problem}", "response_format_failed", "response_format")
        checked = check_output(text, guard)
        self.hit(checked.hits)
        if checked.refusal:
            raise self.refuse(422, checked.refusal, checked.code)
        if self.judge_confidence(job) and guard.low_confidence == "refuse":
            raise self.refuse(422, f"the answer's mean token log-probability {job.mean_logprob:.3f} is below this "
                              f"model's min_mean_logprob {guard.min_mean_logprob}; escalate to a person",
                              "low_confidence")
        return completion, checked.text

    # ------------------------------------------------------------------ 5. accounting and the answer
    def account(self, completion, text: str, finish: str) -> None:
        state, req, job = self.state, self.req, self.job
        latency = time.perf_counter() - self.started
        used = completion.prompt_tokens + completion.completion_tokens
        state.limiter.refund(self.key.id, self.budget - used)
        state.store.add_tokens(self.key.id, used)
        m, label = state.metrics, self.version_label
        m.latency.labels(req.model, label).observe(latency)
        queue_s = (job.started - job.enqueued) if job.started else 0.0
        ttft = (job.first_token - job.enqueued + (job.enqueued - self.started)) if job.first_token else latency
        m.queue.labels(req.model).observe(queue_s)
        m.ttft.labels(req.model, label).observe(ttft)
        m.prompt_tokens.labels(req.model, label).inc(completion.prompt_tokens)
        m.completion_tokens.labels(req.model, label).inc(completion.completion_tokens)
        m.cost.labels(req.model, self.key.id).inc(used / 1000 * state.price_for(req.model))
        self.store_row(200, response=text, prompt_tokens=completion.prompt_tokens,
                       completion_tokens=completion.completion_tokens, latency_s=latency, queue_s=queue_s,
                       ttft_s=ttft, finish_reason=finish, mean_logprob=self.confidence.get("mean_logprob"),
                       low_confidence=int(self.confidence["low"]) if "low" in self.confidence else None)

    @staticmethod
    def usage(completion) -> dict:
        return {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
                "total_tokens": completion.prompt_tokens + completion.completion_tokens}

    def confidence_fields(self) -> dict:
        if not self.scored:
            return {}
        mean = self.confidence.get("mean_logprob")
        return {"low_confidence": bool(self.confidence.get("low")),
                "mean_logprob": round(mean, 4) if mean is not None else None}

    async def respond(self) -> JSONResponse:
        completion, text = await self.finished_text()
        self.account(completion, text, completion.finish_reason)
        choice = {"index": 0, "finish_reason": completion.finish_reason, "logprobs": None}
        choice.update({"message": {"role": "assistant", "content": text}} if self.chat else {"text": text})
        body = {"id": self.response_id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.req.model, "choices": [choice],
                "usage": self.usage(completion), "system_fingerprint": self.fingerprint, **self.confidence_fields()}
        if self.confidence.get("low"):
            self.headers["x-tuneforge-low-confidence"] = "true"
        return JSONResponse(body, headers=self.headers)

    def chunk(self, delta_text: str | None, finish: str | None, *, first: bool = False, usage=None) -> str:
        if usage is not None:
            choices = []
        elif self.chat:
            delta = {"role": "assistant", "content": ""} if first else (
                {"content": delta_text} if delta_text is not None else {})
            choices = [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
        else:
            choices = [{"index": 0, "text": delta_text or "", "finish_reason": finish, "logprobs": None}]
        payload = {"id": self.response_id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                   "created": self.created, "model": self.req.model, "choices": choices}
        if usage is not None:
            payload["usage"] = usage
            return f"data: {json.dumps(payload)}\n\n"
        payload["system_fingerprint"] = self.fingerprint
        if finish is not None:
            payload.update(self.confidence_fields())  # known only at the end: the last chunk carries the flag
        if self.include_usage:
            payload["usage"] = None
        return f"data: {json.dumps(payload)}\n\n"

    def stream(self) -> StreamingResponse:
        loop = asyncio.get_running_loop()
        self.tokens: asyncio.Queue = asyncio.Queue()
        if not self.buffered:
            self.job.on_token = lambda token: loop.call_soon_threadsafe(self.tokens.put_nowait, token)
        self.include_usage = bool((self.req.stream_options or {}).get("include_usage"))
        return StreamingResponse(self.events(), media_type="text/event-stream",
                                 headers={**self.headers, "cache-control": "no-cache"})

    async def streamed_text(self):
        """Yield text deltas as tokens arrive (holding back what could be the start of a stop string), then return
        the finished completion through the generator's last item."""
        s, job, max_tokens = self.served, self.job, self.max_tokens
        holdback = max((len(x) for x in job.stop), default=1) - 1
        task = asyncio.ensure_future(self.run(job))
        produced: list[int] = []
        sent, done = "", False
        while not task.done() or not self.tokens.empty():
            getter = asyncio.ensure_future(self.tokens.get())
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                continue
            token = getter.result()
            if done:
                continue
            if token in s.stop_ids or len(produced) >= max_tokens:
                done = True
                continue
            produced.append(token)
            partial = s.decode(produced)
            cuts = [partial.find(x) for x in job.stop if x in partial]
            if cuts:
                partial, done = partial[: min(cuts)], True
            safe = partial if done else partial[: max(0, len(partial) - holdback)]
            if safe.endswith("\ufffd"):
                continue
            if len(safe) > len(sent) and safe.startswith(sent):
                yield safe[len(sent):], None
                sent = safe
        yield None, await task

    async def events(self):
        if self.chat:
            yield self.chunk(None, None, first=True)
        sent = ""
        try:
            if self.buffered:
                completion, text = await self.finished_text()
            else:
                async for delta, finished in self.streamed_text():
                    if delta is not None:
                        yield self.chunk(delta, None)
                        sent += delta
                    else:
                        completion = finished
                text = completion.text
                self.judge_confidence(self.job)
            if len(text) > len(sent) or not text.startswith(sent):
                yield self.chunk(text.removeprefix(sent), None)
            self.account(completion, text, completion.finish_reason)
            yield self.chunk(None, completion.finish_reason)
            if self.include_usage:
                yield self.chunk(None, None, usage=self.usage(completion))
        except ApiError as error:
            body = {"error": {"message": error.message, "type": "invalid_request_error", "param": error.param,
                              "code": error.code}}
            yield f"data: {json.dumps(body)}\n\n"
        except Exception as exc:  # noqa: BLE001 - the stream has started; report in-band, keep the server up
            self.store_row(500, error=str(exc))
            body = {"error": {"message": str(exc), "type": "server_error", "param": None, "code": "internal_error"}}
            yield f"data: {json.dumps(body)}\n\n"
        yield "data: [DONE]\n\n"
