"""The serving engine: one base model in memory, adapters attached by name (LRU pool), dynamic batching.

One worker thread owns the `InferenceEngine` (torch calls never run concurrently, adapters are never swapped under
a running batch). Requests queue up; the worker takes the first and waits `window_ms` for more (up to
`max_batch_size`). Greedy requests (temperature 0, any adapter) then run as a continuous batch
(serve/engines/continuous.py): at every decoding step finished rows leave and queued greedy requests join (in
groups), so a request arriving while a batch runs starts within a few steps. Sampled requests, engines the loop does
not support, and `continuous=False` run as one `engine.generate` call per sampling setting, with per-prompt adapters
(PEFT's mixed-adapter batch) and per-prompt max_tokens. Adapter loads/unloads are queued like requests, so every
request queued before an unload still runs on the adapter it asked for (a continuous batch stops admitting at the
first queued item that cannot join).

Seeded sampled requests run alone: a seeded sample is reproducible only when the batch around it is the same.
"""
from __future__ import annotations

import json
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.errors import TuneforgeError
from tuneforge.models.inference import InferenceEngine
from tuneforge.serve.engines import continuous


class AdapterRefused(TuneforgeError):
    """An adapter that this base cannot serve (checked before loading)."""


@dataclass
class Job:
    prompt_ids: list[int]
    adapter: str | None
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    on_token: Callable[[int], None] | None = None   # called on the worker thread with each new token id
    score: bool = False                             # compute mean_logprob of the answer (low-confidence guardrail)
    mean_logprob: float | None = None
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)
    started: float | None = None
    first_token: float | None = None

    def group_key(self):
        if self.temperature > 0 and self.seed is not None:
            return ("solo", id(self))
        return (self.temperature if self.temperature > 0 else 0.0, self.top_p if self.temperature > 0 else 1.0,
                self.stop)


@dataclass
class Control:
    action: Callable[[], object]
    future: Future = field(default_factory=Future)


def adapter_folder(path: str | Path) -> Path:
    """An adapter folder, or a run directory holding one in adapter/."""
    path = Path(path).expanduser()
    if not (path / "adapter_config.json").is_file() and (path / "adapter" / "adapter_config.json").is_file():
        path = path / "adapter"
    return path


def check_adapter(engine: InferenceEngine, path: Path, base_sha256: str | None) -> None:
    """Refuse an adapter this base cannot serve, with the reason: unreadable config, a method other than LoRA
    (mixed-adapter batches are LoRA-only in PEFT), trained copies of whole modules (modules_to_save, new tokens),
    modules the base does not have, shapes that do not fit, or a different base weights hash in its run manifest."""
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise AdapterRefused(f"{path}: not an adapter folder (no adapter_config.json)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterRefused(f"{config_file}: unreadable ({exc})") from None
    if config.get("peft_type") != "LORA":
        raise AdapterRefused(f"{path}: a {config.get('peft_type')} adapter; the server batches LoRA adapters only")
    if config.get("modules_to_save") or config.get("trainable_token_indices"):
        raise AdapterRefused(f"{path}: the adapter carries full copies of modules "
                             f"({config.get('modules_to_save') or 'trainable tokens'}); the server shares one base "
                             "and cannot serve them", hint="export the run as a merged model and serve that instead")
    manifest = path.parent / "manifest.json"
    if base_sha256 and manifest.is_file():
        trained_on = (json.loads(manifest.read_text(encoding="utf-8")).get("base_model") or {}).get("weights_sha256")
        if trained_on and trained_on != base_sha256:
            raise AdapterRefused(f"{path}: trained on base weights {trained_on[:12]}, served base is "
                                 f"{base_sha256[:12]}", hint="serve it on the base it was trained on")
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        raise AdapterRefused(f"{path}: no adapter_model.safetensors")
    from safetensors import safe_open

    base = engine.model.get_base_model() if hasattr(engine.model, "get_base_model") else engine.model
    modules = dict(base.named_modules())
    with safe_open(str(weights), "pt") as handle:
        for key in handle.keys():  # noqa: SIM118 - safe_open is not iterable
            if ".lora_A." not in key and ".lora_B." not in key:
                raise AdapterRefused(f"{path}: tensor {key} is not a LoRA matrix; the server cannot serve it")
            module_name = key.split(".lora_")[0].removeprefix("base_model.model.")
            module = modules.get(module_name)
            if module is None or not hasattr(module, "in_features"):
                raise AdapterRefused(f"{path}: the adapter targets {module_name}, which this base does not have",
                                     hint="it was trained on a different architecture")
            shape = handle.get_slice(key).get_shape()
            expected = module.in_features if ".lora_A." in key else module.out_features
            actual = shape[1] if ".lora_A." in key else shape[0]
            if actual != expected:
                raise AdapterRefused(f"{path}: {module_name} is {actual} wide in the adapter but {expected} in the "
                                     "base", hint="it was trained on a different base model")


class ServingEngine:
    """Adapters by name + the batching worker. `submit` is thread-safe; results arrive on the job's future."""

    def __init__(self, engine: InferenceEngine, *, max_loaded: int, max_batch_size: int, window_ms: float,
                 max_queue: int, base_sha256: str | None = None, on_batch: Callable[[int], None] | None = None,
                 continuous: bool = True):
        self.engine, self.max_loaded, self.base_sha256 = engine, max_loaded, base_sha256
        self.continuous = continuous  # greedy requests through serve/engines/continuous.py where the engine allows
        self.max_batch_size, self.window, self.max_queue = max_batch_size, window_ms / 1000.0, max_queue
        self.known: dict[str, Path] = {}                 # adapters that may be served (loaded on demand)
        self.loaded: OrderedDict[str, None] = OrderedDict()  # in memory, least recently used first
        self.on_batch = on_batch
        self._queue: queue.Queue = queue.Queue()
        self._backlog: deque = deque()  # taken from the queue, not run yet (ahead of the queue, in arrival order)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="tuneforge-serve-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ client side
    def pending(self) -> int:
        return self._queue.qsize() + len(self._backlog)

    def submit(self, job: Job) -> Future:
        self._queue.put(job)
        return job.future

    def control(self, action: Callable[[], object]) -> Future:
        item = Control(action)
        self._queue.put(item)
        return item.future

    def close(self) -> None:
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout=30)

    # ------------------------------------------------------------------ adapters (worker thread)
    def register(self, name: str, path: str | Path, *, load: bool = True) -> None:
        if not getattr(self.engine, "supports_adapters", True):
            raise AdapterRefused(f"{path}: this server's engine ({type(self.engine).__name__}) serves no adapters",
                                 hint="merge the adapter and serve the merged export, or use engine tuneforge")
        folder = adapter_folder(path)
        check_adapter(self.engine, folder, self.base_sha256)
        if name in self.loaded:
            raise TuneforgeError(f"an adapter named {name!r} is already loaded", hint="unload it first")
        previous = self.known.get(name)
        self.known[name] = folder
        if load:
            try:
                self._ensure_loaded({name})
            except Exception:
                # A load the engine refuses (e.g. vLLM's rank limit) must not leave the name pointing at it.
                if previous is None:
                    del self.known[name]
                else:
                    self.known[name] = previous
                raise

    def unregister(self, name: str) -> None:
        if name not in self.known:
            raise TuneforgeError(f"no adapter named {name!r}")
        if name in self.loaded:
            self.engine.remove_adapter(name)
            del self.loaded[name]
        del self.known[name]

    def _ensure_loaded(self, names: set[str]) -> None:
        if len(names) > self.max_loaded:
            raise TuneforgeError(f"a batch needs {len(names)} adapters but at most {self.max_loaded} may be loaded")
        for name in names:
            if name not in self.known:
                raise TuneforgeError(f"no adapter named {name!r}", hint="it may have been unloaded")
            if name in self.loaded:
                self.loaded.move_to_end(name)
                continue
            while len(self.loaded) >= self.max_loaded:
                victim = next(n for n in self.loaded if n not in names)
                self.engine.remove_adapter(victim)
                del self.loaded[victim]
            self.engine.add_adapter(name, str(self.known[name]))
            self.loaded[name] = None

    # ------------------------------------------------------------------ the worker
    def _work(self) -> None:
        while not self._stop.is_set():
            item = self._backlog.popleft() if self._backlog else self._queue.get()
            if item is None:
                break
            if isinstance(item, Control):
                self._run_control(item)
                continue
            batch = [item]
            deadline = time.perf_counter() + self.window
            while len(batch) < self.max_batch_size:
                try:
                    nxt = self._next_item(deadline - time.perf_counter())
                except queue.Empty:
                    break
                if nxt is None or isinstance(nxt, Control):
                    self._backlog.appendleft(nxt)  # run what came before it first, in arrival order
                    break
                batch.append(nxt)
            greedy = [job for job in batch if self._joinable(job)]
            if greedy and continuous.supports(self.engine):
                self._backlog.extendleft(reversed([job for job in batch if not self._joinable(job)]))
                continuous.serve(self, greedy)
            else:
                self._run_batch(batch)
            if not self._backlog and self._stop.is_set():
                break
        self._fail_pending(TuneforgeError("the server is shutting down"))

    def _next_item(self, timeout: float):
        if self._backlog:
            return self._backlog.popleft()
        return self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()

    def _joinable(self, item) -> bool:
        """A request a continuous batch can take: greedy (stop strings only cut the text, per request)."""
        return self.continuous and isinstance(item, Job) and item.temperature <= 0

    def _run_control(self, item: Control) -> None:
        try:
            item.future.set_result(item.action())
        except Exception as exc:  # noqa: BLE001 - handed to the caller, who turns it into an HTTP error
            item.future.set_exception(exc)

    def _run_batch(self, batch: list[Job]) -> None:
        groups: dict = {}
        for job in batch:
            if job.future.set_running_or_notify_cancel():
                groups.setdefault(job.group_key(), []).append(job)
        for jobs in groups.values():
            try:
                self._ensure_loaded({j.adapter for j in jobs if j.adapter})
                self._generate(jobs)
            except Exception as exc:  # noqa: BLE001 - one bad batch fails its requests, never the worker
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)

    def _generate(self, jobs: list[Job]) -> None:
        now = time.perf_counter()
        for job in jobs:
            job.started = now
        if self.on_batch is not None:
            self.on_batch(len(jobs))

        def on_step(indices: list[int], tokens: list[int]) -> None:
            stamp = time.perf_counter()
            for index, token in zip(indices, tokens):
                job = jobs[index]
                if job.first_token is None:
                    job.first_token = stamp
                if job.on_token is not None:
                    job.on_token(token)

        first = jobs[0]
        completions = self.engine.generate(
            [j.prompt_ids for j in jobs], max_new_tokens=[j.max_tokens for j in jobs], batch_size=len(jobs),
            temperature=first.temperature, top_p=first.top_p, seed=first.seed, stop=first.stop,
            adapters=[j.adapter for j in jobs] if self.engine.adapters else None, progress=False, on_step=on_step)
        scored = [(job, c) for job, c in zip(jobs, completions) if job.score and c.token_ids]
        if scored:
            self._score(scored)
        for job, completion in zip(jobs, completions):
            job.future.set_result(completion)

    def _score(self, scored: list[tuple[Job, object]]) -> None:
        """Mean log-probability of each answer's tokens under the model (adapter) that wrote it: one
        teacher-forced pass per adapter group, on the worker thread that owns the model."""
        from contextlib import nullcontext

        from tuneforge.models.inference import masked_token_logps

        groups: dict[str | None, list[tuple[Job, object]]] = {}
        for job, completion in scored:
            groups.setdefault(job.adapter, []).append((job, completion))
        for adapter, items in groups.items():
            if hasattr(self.engine, "score_rows"):
                results = self.engine.score_rows([(j.prompt_ids, list(c.token_ids)) for j, c in items],
                                                 adapters=[adapter] * len(items))
            else:
                rows = [(list(j.prompt_ids) + list(c.token_ids), [0] * len(j.prompt_ids) + [1] * len(c.token_ids))
                        for j, c in items]
                if adapter is None:
                    context = self.engine.base_context()
                else:
                    self.engine.model.set_adapter(adapter)
                    context = nullcontext()
                with context:
                    results = masked_token_logps(self.engine.model, rows, batch_size=len(rows))
            for (job, _), (logp, count) in zip(items, results):
                job.mean_logprob = logp / count if count else None

    def _fail_pending(self, error: Exception) -> None:
        while True:
            try:
                item = self._backlog.popleft() if self._backlog else self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None and not item.future.done():
                item.future.set_exception(error)
