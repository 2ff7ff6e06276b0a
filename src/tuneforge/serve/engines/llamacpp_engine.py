"""`engine: llamacpp`: a GGUF export served behind the same routes, keys, limits and guardrails.

The serving engine talks to an `InferenceEngine`; this wraps the project's llama.cpp model (models/llamacpp.py)
in that surface: `prompt_ids`, `generate(...)` -> Completions (one prompt at a time: llama.cpp's KV cache holds one
sequence here, so a batch runs its requests in turn), stop strings cut like the tuneforge engine cuts them, and
teacher-forced scoring for the low-confidence guardrail. Adapters are refused: serve a merged export instead.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tuneforge.errors import TuneforgeError
from tuneforge.models.inference import Completion, finish_tokens


class LlamaCppEngine:
    supports_adapters = False
    adapters: list[str] = []

    def __init__(self, path: str | Path, *, n_ctx: int = 2048, name: str | None = None):
        from tuneforge.models.llamacpp import LlamaCppModel

        self.llama = LlamaCppModel(path, name=name or str(path), n_ctx=n_ctx)
        self.name = self.llama.name
        self.stop_ids = set(self.llama.eog_ids)

    def prompt_ids(self, item) -> list[int]:
        return self.llama.prompt_ids(item)

    def decode(self, ids: Sequence[int]) -> str:
        return self.llama.decode(ids)

    def generate(self, prompts: Sequence[list[int]], *, max_new_tokens: int | Sequence[int], batch_size: int = 1,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None, stop: Sequence[str] = (),
                 adapters: Sequence[str | None] | None = None, progress: bool = False,
                 on_step: Callable[[list[int], list[int]], None] | None = None) -> list[Completion]:
        if adapters and any(adapters):
            raise TuneforgeError("engine llamacpp serves no adapters")
        limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
        rng = np.random.default_rng(seed if seed is not None else 0)
        out = []
        for index, (prompt, limit) in enumerate(zip(prompts, limits)):
            callback = (lambda token, i=index: on_step([i], [token])) if on_step is not None else None
            tokens, reason = self.llama.greedy(list(prompt), limit, temperature=temperature, rng=rng, top_p=top_p,
                                               on_token=callback)
            tokens, text, reason = finish_tokens(tokens, set(), self.decode, stop, reason)
            out.append(Completion(text=text, token_ids=tokens, finish_reason=reason, prompt_tokens=len(prompt)))
        return out


    def score_rows(self, rows: Sequence[tuple[list[int], list[int]]],
                   adapters: Sequence[str | None] | None = None) -> list[tuple[float, int]]:
        """(summed log-prob, count) of each (prompt, answer) pair's answer tokens (no adapters: `adapters` is None
        or all None)."""
        return [(self.llama.continuation_logp(prompt, answer), len(answer)) for prompt, answer in rows]
