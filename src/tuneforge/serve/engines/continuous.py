"""Iteration-level (continuous) batching of greedy requests for the serving engine.

`ServingEngine` runs greedy requests (temperature 0, any adapter or the base) through a `ContinuousBatch` on its
worker thread instead of one `InferenceEngine.generate` call per batch. Between two decoding steps:

- rows that produced a stop id or reached their own `max_tokens` leave: their completion is handed back at once
  and their cache rows are dropped (`DynamicCache.batch_select_indices`), then leading cache columns that are
  padding for every remaining row are cut;
- queued requests join: the newcomers' prompts run as one prefill of their own (left-padded, their own
  `DynamicCache`, `adapter_names` for them), their first token comes from that pass, and their cache is merged into
  the running one by `merge_caches`: the side with the shorter sequence axis is left-padded with zero keys/values
  whose attention mask is 0. Position ids count real tokens only (per row, as models/decoding.py's `greedy_batch`
  does), so every row sees exactly its own prompt and answer. Newcomers join a running batch in groups (a quarter
  of its free rows waiting) or after `JOIN_AFTER_STEPS` steps: each join costs a prefill pass and a cache copy.

Per-row adapters go through PEFT's mixed-adapter forward (`adapter_names=[...]`, "__base__" for base rows; the
LoRA layers stacked by integrations/peft_mixed_lora.py); with no adapter loaded the model is called directly.

Exactness: every row attends to its own tokens only (padding keys are masked, so they add exact zeros), and the
argmax is taken over fp32 logits; what changes with the batch around a row is float rounding (other batch and
sequence shapes), so a token can differ from the request's answer alone only where its two best logits tie within
rounding - the same condition as for any batched generation (tests: token ids equal to each request alone).

Supported: `InferenceEngine`s whose model `fast_greedy_target` accepts (a causal LM, or LoRA-only PEFT) and whose
cache layers are plain `DynamicLayer`s (no sliding-window or quantised cache); `supports` says so. Everything else,
and sampled requests, keep the serving engine's batch-at-a-time path.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812

from tuneforge.models.decoding import _logits_to_keep, fast_greedy_target, left_padded
from tuneforge.models.inference import (
    BASE_ADAPTER,
    Completion,
    _pad_id,
    finish_tokens,
    model_device,
    stop_token_ids,
)


def supports(engine) -> bool:
    """Whether `engine` can serve greedy requests through a `ContinuousBatch` (checked per batch: the model changes
    when the first adapter is attached)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    if not getattr(engine, "continuous_batching", True):
        return False  # an engine can opt out
    if not isinstance(getattr(engine, "model", None), torch.nn.Module) or not hasattr(engine, "tokenizer"):
        return False  # not a transformers model behind an InferenceEngine (llama.cpp, ...)
    try:
        target = fast_greedy_target(engine.model)
    except (TypeError, ValueError, AttributeError):  # a forward without an inspectable signature
        return False
    if target is None:
        return False
    cache = DynamicCache(config=getattr(target, "config", None))
    return all(type(layer) is DynamicLayer for layer in cache.layers)


def merge_caches(cache, mask: torch.Tensor, other, other_mask: torch.Tensor) -> torch.Tensor:
    """Append the rows of `other` (a DynamicCache, [rows, seq] attention mask) to `cache` in place; returns the
    merged mask. The side with the shorter sequence axis is left-padded: zero keys/values, mask 0."""
    width = max(mask.shape[1], other_mask.shape[1])
    if len(cache.layers) != len(other.layers) or any(
            mine.keys.shape[-2] != mask.shape[1] or theirs.keys.shape[-2] != other_mask.shape[1]
            for mine, theirs in zip(cache.layers, other.layers)):
        raise ValueError("the caches do not match their attention masks or each other")  # checked before any change
    for mine, theirs in zip(cache.layers, other.layers):
        mine.keys = torch.cat([_pad_left(mine.keys, width), _pad_left(theirs.keys, width)], dim=0)
        mine.values = torch.cat([_pad_left(mine.values, width), _pad_left(theirs.values, width)], dim=0)
    return torch.cat([F.pad(mask, (width - mask.shape[1], 0)), F.pad(other_mask, (width - other_mask.shape[1], 0))])


def trim_padding(cache, mask: torch.Tensor) -> torch.Tensor:
    """Cut the leading cache columns that are padding for every row (left behind by rows that left); returns the
    trimmed mask."""
    cut = int(mask.any(dim=0).int().argmax())
    if cut == 0:
        return mask
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys[..., cut:, :], layer.values[..., cut:, :]
    return mask[:, cut:]


def _pad_left(states: torch.Tensor, width: int) -> torch.Tensor:
    """[batch, heads, seq, dim] -> [batch, heads, width, dim], zeros in front."""
    return F.pad(states, (0, 0, width - states.shape[-2], 0)) if states.shape[-2] < width else states


@dataclass
class _Row:
    job: object          # a serving Job: prompt_ids, adapter, max_tokens, stop, on_token, first_token
    tokens: list[int]    # new tokens so far, the last one not yet fed to the model


class ContinuousBatch:
    """The running rows of greedy requests, their shared KV cache, attention mask and positions.

    `join(jobs)` prefills and adds requests, `step()` runs one decoding step for every row; both return the
    (job, Completion) pairs that finished, or (job, exception) for a request whose `on_token` raised (a broken
    stream fails its own request only). Each new token is streamed to `job.on_token` (the stop id included,
    nothing after it), and `job.first_token` is stamped. The caller holds the model: no adapter may be removed
    while a row uses it. Call under `torch.no_grad()` with the model in eval mode.
    """

    def __init__(self, engine):
        self.engine = engine
        self.stop_ids = set(stop_token_ids(engine.model, engine.tokenizer))
        self.pad_id = _pad_id(engine.tokenizer, sorted(self.stop_ids))
        self.rows: list[_Row] = []
        self.cache = None
        self.mask: torch.Tensor | None = None   # [rows, cache length]
        self.last: torch.Tensor | None = None   # [rows, 1]: position of each row's last cached token

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def adapters(self) -> set[str]:
        return {row.job.adapter for row in self.rows if row.job.adapter}

    # ------------------------------------------------------------------ the two moves
    @staticmethod
    def check(job) -> None:
        """What `InferenceEngine.generate` refuses too: raised for the one request, before it joins."""
        if job.max_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {job.max_tokens}")
        if not job.prompt_ids:
            raise ValueError("the prompt is empty; generation needs at least one prompt token")

    def join(self, jobs) -> list[tuple[object, Completion | Exception]]:
        from transformers import DynamicCache

        if not jobs:
            return []
        device = model_device(self.engine.model)
        input_ids, mask, positions = left_padded([j.prompt_ids for j in jobs], self.pad_id)
        mask, positions = mask.to(device), positions.to(device)
        cache = DynamicCache(config=getattr(fast_greedy_target(self.engine.model), "config", None))
        logits = self._forward(input_ids.to(device), mask, positions, cache, [j.adapter for j in jobs], prefill=True)
        rows = [_Row(job, []) for job in jobs]
        done = self._emit(rows, logits)
        finished = {id(job) for job, _ in done}
        keep = [i for i, row in enumerate(rows) if id(row.job) not in finished]
        if not keep:
            return done
        last = positions[:, -1:]
        if len(keep) < len(rows):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, last = trim_padding(cache, mask[index]), last[index]
        if self.rows:
            self.mask = merge_caches(self.cache, self.mask, cache, mask)
            self.last = torch.cat([self.last, last])
        else:
            self.cache, self.mask, self.last = cache, mask, last
        self.rows += [rows[i] for i in keep]
        return done

    def step(self) -> list[tuple[object, Completion | Exception]]:
        if not self.rows:
            return []
        device = self.mask.device
        step_ids = torch.tensor([[row.tokens[-1]] for row in self.rows], device=device)
        self.mask = torch.cat([self.mask, torch.ones((len(self.rows), 1), dtype=self.mask.dtype, device=device)], 1)
        self.last = self.last + 1
        logits = self._forward(step_ids, self.mask, self.last, self.cache, [r.job.adapter for r in self.rows])
        done = self._emit(self.rows, logits)
        if done:
            finished = {id(job) for job, _ in done}
            keep = [i for i, row in enumerate(self.rows) if id(row.job) not in finished]
            self.rows = [self.rows[i] for i in keep]
            if keep:
                index = torch.tensor(keep, device=device)
                self.cache.batch_select_indices(index)
                self.mask, self.last = trim_padding(self.cache, self.mask[index]), self.last[index]
            else:
                self.cache = self.mask = self.last = None
        return done

    def abandon(self) -> list[object]:
        """Drop every row (after a failed step); returns their jobs."""
        jobs = [row.job for row in self.rows]
        self.rows, self.cache, self.mask, self.last = [], None, None, None
        return jobs

    # ------------------------------------------------------------------ helpers
    def _forward(self, input_ids, mask, positions, cache, adapters, *, prefill: bool = False) -> torch.Tensor:
        """Last-position logits [rows, vocab] of one forward through the engine's model."""
        model = self.engine.model
        extra = _logits_to_keep(fast_greedy_target(model)) if prefill else {}
        if self.engine.adapters:  # a PEFT model: one adapter name per row
            extra["adapter_names"] = [name or BASE_ADAPTER for name in adapters]
        out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                    use_cache=True, **extra)
        return out.logits[:, -1]

    def _emit(self, rows: list[_Row], logits: torch.Tensor) -> list[tuple[object, Completion | Exception]]:
        """Append each row's argmax, stream it, and return the rows that finished with their completions."""
        tokens = logits.float().argmax(-1).tolist()
        stamp = time.perf_counter()
        done = []
        for row, token in zip(rows, tokens):
            job = row.job
            row.tokens.append(token)
            if job.first_token is None:
                job.first_token = stamp
            if job.on_token is not None:
                try:
                    job.on_token(token)
                except Exception as exc:  # noqa: BLE001 - a broken stream fails its own request, not the batch
                    done.append((job, exc))
                    continue
            if token in self.stop_ids or len(row.tokens) >= job.max_tokens:
                done.append((job, self._completion(job, row.tokens)))
        return done

    def _completion(self, job, tokens: list[int]) -> Completion:
        decode = lambda ids: self.engine.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        kept, text, reason = finish_tokens(list(tokens), self.stop_ids, decode, job.stop)
        return Completion(text=text, token_ids=kept, finish_reason=reason, prompt_tokens=len(job.prompt_ids))


# ---------------------------------------------------------------------------------------- the serving loop
def serve(serving, jobs: list) -> None:
    """Run greedy `jobs` (already taken from `serving`'s queue) as a `ContinuousBatch` on the worker thread, and let
    every greedy request that arrives while it runs join between two steps, until the batch is empty.

    Arrival order is kept: the first queued item that cannot join (a sampled request, an adapter load/unload, the
    shutdown marker) stops admission; it waits in `serving._backlog` until the rows admitted before it finish.
    Newcomers join in arrival order up to `max_batch_size` rows and as long as the adapters of the running rows and
    theirs fit in the adapter pool (`max_loaded`); a request that does not fit waits, and so does everything after
    it, until rows leave.
    """
    from collections import deque

    from tuneforge.models.inference import eval_mode

    batch = ContinuousBatch(serving.engine)
    waiting = deque(jobs)
    admitting = not serving._backlog  # something held back arrived before the queue's requests: they wait for it
    held_steps = 0  # decoding steps the waiting requests have been held back for
    with eval_mode(serving.engine.model), torch.no_grad():
        while waiting or batch:
            if admitting:
                admitting = _pull(serving, batch, waiting)
            if batch and waiting and not _join_now(serving, batch, waiting, held_steps):
                held_steps += 1
                newcomers = []
            else:
                held_steps = 0
                newcomers = _admit(serving, batch, waiting)
            if newcomers:
                try:
                    done = batch.join(newcomers)
                except Exception as exc:  # noqa: BLE001 - a failed prefill fails its requests, not the running rows
                    _fail(newcomers, exc)
                else:
                    if serving.on_batch is not None:
                        serving.on_batch(len(batch) + len(done))
                    _resolve(serving, done)
            if batch:
                try:
                    done = batch.step()
                except Exception as exc:  # noqa: BLE001 - one bad step fails its requests, never the worker
                    _fail(batch.abandon(), exc)
                else:
                    _resolve(serving, done)


#: A running batch takes newcomers in groups: when this share of its free rows is waiting, or after this many steps.
JOIN_SHARE, JOIN_AFTER_STEPS = 0.25, 4


def _join_now(serving, batch: ContinuousBatch, waiting, held_steps: int) -> bool:
    """Whether the waiting requests join the running batch before this step. Each join is a prefill pass of its own
    plus a copy of the KV cache, so one request joining per step (16 closed-loop clients) made every step cost about
    two forwards: measured 48.9 vs 60.3 tokens/s batch-at-a-time (bench/bench_serve.py). Grouping newcomers keeps
    the join cost per request low while a late request still starts within a few steps."""
    free = serving.max_batch_size - len(batch)
    return len(waiting) >= max(1, round(free * JOIN_SHARE)) or held_steps >= JOIN_AFTER_STEPS


def _pull(serving, batch: ContinuousBatch, waiting) -> bool:
    """Move queued greedy requests to `waiting` while there is room for them; False once an item that cannot join
    was met (it goes to the backlog and admission stops)."""
    import queue

    while len(batch) + len(waiting) < serving.max_batch_size:
        try:
            item = serving._queue.get_nowait()
        except queue.Empty:
            return True
        if not serving._joinable(item):
            serving._backlog.append(item)
            return False
        waiting.append(item)
    return True


def _admit(serving, batch: ContinuousBatch, waiting) -> list:
    """The waiting requests that join now (their adapters loaded), in arrival order."""
    admitted: list = []
    while waiting and len(batch) + len(admitted) < serving.max_batch_size:
        job = waiting[0]
        needed = batch.adapters | {j.adapter for j in admitted if j.adapter} | ({job.adapter} if job.adapter else set())
        if len(needed) > serving.max_loaded and (batch or admitted):
            break  # its adapter does not fit next to the running ones: it waits for rows to leave
        waiting.popleft()
        if not job.future.set_running_or_notify_cancel():
            continue
        try:
            ContinuousBatch.check(job)
            serving._ensure_loaded(needed)
        except Exception as exc:  # noqa: BLE001 - handed to the caller (an unknown adapter, a bad limit)
            job.future.set_exception(exc)
            continue
        job.started = time.perf_counter()
        admitted.append(job)
    return admitted


def _resolve(serving, done: list[tuple[object, Completion | Exception]]) -> None:
    """Hand finished requests their completions (scored first where the request asked for it) or errors."""
    for job, error in done:
        if isinstance(error, Exception):
            _fail([job], error)
    done = [(job, completion) for job, completion in done if isinstance(completion, Completion)]
    scored = [(job, completion) for job, completion in done if job.score and completion.token_ids]
    if scored:
        try:
            serving._score(scored)
        except Exception as exc:  # noqa: BLE001
            _fail([job for job, _ in scored], exc)
    for job, completion in done:
        if not job.future.done():
            job.future.set_result(completion)


def _fail(jobs, exc: Exception) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(exc)
