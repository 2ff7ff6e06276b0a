"""A GGUF file run by llama.cpp (llama-cpp-python), with the interface evaluation uses for every model: `.name`,
`.supports_logprobs`, `.answer(items, ...)`, `.label_logprobs`, `.reference_nll`.

    tuneforge eval runs/x/gguf/model-q8_0.gguf --engine llamacpp --base runs/x --data test.jsonl

This is how a user's llama.cpp / Ollama deployment sees the file: its own tokenizer, its own chat formatting from
the GGUF metadata (llama-cpp-python's Jinja2ChatFormatter), its own kernels for the quantised weights. Decoding is
greedy on llama.cpp's logits, one prompt at a time (llama.cpp's KV cache keeps the prompt), and stops at any token
llama.cpp itself treats as end-of-generation, as a deployment would.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tuneforge.console import make_progress
from tuneforge.errors import ModelSourceError, TuneforgeError

INSTALL_HINT = ("install it with `python3 dev.py setup` (the dev extra) or `pip install -e .[gguf]`; it builds "
                "llama.cpp from source (about 10 minutes on 2 cores)")


def import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as exc:
        raise ModelSourceError(f"llama-cpp-python is not installed ({exc})", hint=INSTALL_HINT) from None
    return llama_cpp


class LlamaCppModel:
    """One GGUF file loaded in llama.cpp; greedy answers and teacher-forced log-probabilities."""

    supports_logprobs = True

    # Every position's logits are kept (teacher-forced scoring needs them): n_ctx x vocab floats, 200 MB for
    # 1,024 positions of a 49k vocabulary, so the context is sized for evaluation prompts, not the model's maximum.
    def __init__(self, path: str | Path, *, name: str | None = None, n_ctx: int = 1024, lora_path: str | None = None,
                 n_threads: int | None = None):
        llama_cpp = import_llama_cpp()
        self.path = Path(path)
        self.name = name or str(path)
        threads = n_threads or max(1, min(os.cpu_count() or 1, int(os.environ.get("OMP_NUM_THREADS", "0")) or 4))
        try:
            self.llm = llama_cpp.Llama(model_path=str(self.path), n_ctx=n_ctx, logits_all=True, verbose=False,
                                       lora_path=lora_path, n_threads=threads, n_threads_batch=threads, seed=0)
        except (ValueError, RuntimeError) as exc:
            raise ModelSourceError(f"llama.cpp could not load {self.path}: {exc}") from None
        self.metadata = dict(self.llm.metadata)
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self._lib = llama_cpp
        self.n_vocab = self.llm.n_vocab()
        self.eog_ids = {i for i in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, i)}
        self.generated_tokens = 0
        self.generation_seconds = 0.0

    # ------------------------------------------------------------------ tokenizer and template
    def token_text(self, token_id: int) -> str:
        return self.llm.detokenize([token_id], special=True).decode("utf-8", errors="replace")

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        """Token ids as llama.cpp splits `text`; special-token text (<|im_start|>) becomes its special id."""
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=True))

    @property
    def chat_template(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template")

    def render(self, messages: list[dict], *, add_generation_prompt: bool = True) -> str:
        """The prompt text llama.cpp's own chat formatter makes from the GGUF's template."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        if not self.chat_template:
            raise TuneforgeError(f"{self.path}: the GGUF has no tokenizer.chat_template to render chat messages")
        special = {key: self.metadata.get(f"tokenizer.ggml.{key}_token_id") for key in ("bos", "eos")}
        texts = {key: self.token_text(int(v)) if v is not None else "" for key, v in special.items()}
        formatter = Jinja2ChatFormatter(self.chat_template, eos_token=texts["eos"], bos_token=texts["bos"],
                                        add_generation_prompt=add_generation_prompt)
        return formatter(messages=messages).prompt

    def prompt_ids(self, item: dict | list[dict] | str) -> list[int]:
        if isinstance(item, dict):
            item = item["messages"] if item.get("messages") is not None else item["prompt"]
        if isinstance(item, str):
            return self.tokenize(item, add_special=True)
        return self.tokenize(self.render(item))

    # ------------------------------------------------------------------ decoding
    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """llama.cpp's logits at every position of `ids` (row t predicts token t + 1)."""
        if len(ids) > self.llm.n_ctx():
            raise TuneforgeError(f"{len(ids)} tokens exceed the llama.cpp context of {self.llm.n_ctx()}")
        self.llm.reset()
        self.llm.eval(list(ids))
        return np.array(self.llm.scores[: len(ids)], dtype=np.float32)

    def greedy(self, prompt: Sequence[int], max_new_tokens: int, *, temperature: float = 0.0,
               rng: np.random.Generator | None = None, top_p: float = 1.0,
               on_token: Callable[[int], None] | None = None) -> tuple[list[int], str]:
        """(new tokens without the stop token, "stop" | "length"): argmax of llama.cpp's logits each step, or a
        draw from softmax(logits / temperature) when `temperature` > 0 (code tasks' pass@k sampling), restricted
        to the smallest set of tokens holding `top_p` of the probability. `on_token` sees each kept token as it is
        chosen (the server streams them)."""
        if len(prompt) >= self.llm.n_ctx():
            raise TuneforgeError(f"a prompt of {len(prompt)} tokens does not fit the llama.cpp context of "
                                 f"{self.llm.n_ctx()}", hint="shorten the prompts")
        started = time.perf_counter()
        self.llm.reset()
        self.llm.eval(list(prompt))
        out: list[int] = []
        reason = "length"
        for _ in range(max_new_tokens):
            if self.llm.n_tokens >= self.llm.n_ctx():
                break
            logits = self.llm.scores[self.llm.n_tokens - 1]
            if temperature > 0:
                scaled = (logits - logits.max()) / temperature
                probs = np.exp(scaled) / np.exp(scaled).sum()
                if top_p < 1.0:
                    order = np.argsort(-probs)
                    keep = order[: int(np.searchsorted(np.cumsum(probs[order]), top_p)) + 1]
                    nucleus = np.zeros_like(probs)
                    nucleus[keep] = probs[keep]
                    probs = nucleus / nucleus.sum()
                token = int((rng or np.random.default_rng(0)).choice(len(probs), p=probs))
            else:
                token = int(np.argmax(logits))
            if token in self.eog_ids:
                reason = "stop"
                break
            out.append(token)
            if on_token is not None:
                on_token(token)
            self.llm.eval([token])
        self.generated_tokens += len(out)
        self.generation_seconds += time.perf_counter() - started
        return out, reason

    def decode(self, ids: Sequence[int]) -> str:
        return self.llm.detokenize(list(ids)).decode("utf-8", errors="replace")

    def answer(self, items: Sequence[dict], *, max_new_tokens: int, batch_size: int = 16,
               description: str = "generating", progress: bool = True) -> list[str]:
        """Greedy answers (`batch_size` is accepted for the shared interface; llama.cpp decodes one prompt at a
        time here, so answers never depend on batching)."""
        texts = []
        with make_progress(progress) as bar:
            task = bar.add_task(description, total=len(items))
            for item in items:
                tokens, _ = self.greedy(self.prompt_ids(item), max_new_tokens)
                texts.append(self.decode(tokens))
                bar.advance(task)
        return texts

    def sample(self, items: Sequence[dict], *, n: int, max_new_tokens: int, temperature: float, batch_size: int = 16,
               seed: int = 0, description: str = "sampling") -> list[list[str]]:
        """n answers per item, seeded (temperature 0: n copies of the greedy answer)."""
        rng = np.random.default_rng(seed)
        out = []
        for item in items:
            prompt = self.prompt_ids(item)
            out.append([self.decode(self.greedy(prompt, max_new_tokens, temperature=temperature, rng=rng)[0])
                        for _ in range(n)])
        return out

    @property
    def tokens_per_second(self) -> float | None:
        return self.generated_tokens / self.generation_seconds if self.generation_seconds else None

    # ------------------------------------------------------------------ scoring
    def continuation_logp(self, prompt: list[int], continuation: list[int]) -> float:
        """Summed log-probability of `continuation` right after `prompt` (teacher-forced)."""
        return self._sequence_logp(list(prompt), list(continuation))

    def _sequence_logp(self, prompt: list[int], continuation: list[int]) -> float:
        logits = self.logits(prompt + continuation)
        rows = logits[len(prompt) - 1: len(prompt) - 1 + len(continuation)]
        shifted = rows - rows.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return float(sum(logp[i, t] for i, t in enumerate(continuation)))

    def label_logprobs(self, items: Sequence, labels: list[str], batch_size: int = 16) -> list[dict[str, float]]:
        """Per item: {label: summed log-probability of the label's tokens right after the item's prompt}."""
        label_ids = {label: self.tokenize(label) for label in labels}
        out = []
        for item in items:
            prompt = list(item) if isinstance(item, (list, tuple)) and item and isinstance(item[0], int) \
                else self.prompt_ids(item)
            out.append({label: self._sequence_logp(prompt, ids) for label, ids in label_ids.items()})
        return out

    def reference_nll(self, items: Sequence[dict], batch_size: int = 16) -> list[tuple[float, int]]:
        """Per item: (NLL of its reference answer after its prompt, answer token count); chat answers end with the
        end-of-turn token the template writes after an assistant message, raw prompts with EOS."""
        out = []
        for item in items:
            prompt = self.prompt_ids(item)
            if item.get("messages") is not None:
                full_text = self.render(list(item["messages"]) + [{"role": "assistant", "content": item["reference"]}],
                                        add_generation_prompt=False)
                full = self.tokenize(full_text)
                if full[: len(prompt)] != prompt:
                    raise TuneforgeError(f"item {item.get('id')!r}: the chat template renders the answered "
                                         "conversation with a different prefix than the generation prompt")
                answer = full[len(prompt):]
                ends = [i for i, t in enumerate(answer) if t in self.eog_ids]
                answer = answer[: ends[0] + 1] if ends else answer
            else:
                answer = self.tokenize(item["reference"]) + [int(self.metadata["tokenizer.ggml.eos_token_id"])]
            out.append((-self._sequence_logp(prompt, answer), len(answer)))
        return out
