"""The one inference engine: every place in tuneforge that generates text or scores tokens goes through here.

Training-time evaluation, `tuneforge eval`, the judge (a local model), the safety probes and the forgetting check
all call `InferenceEngine`; nothing else calls `model.generate`. It wraps one loaded model (a base, with any number
of PEFT adapters attached by name) and its tokenizer, and offers:

- `render` / `prompt_ids`: chat messages through the model's *own* chat template (or a raw prompt with BOS);
- `generate`: batched generation with the KV cache, greedy or sampled, stop strings, per-prompt adapters (greedy
  calls without per-prompt adapters run models/decoding.py's loop: shared prompt prefix once, finished rows
  dropped, LoRA merged into a copy for the call; the rest runs transformers' `generate`);
- `label_logprobs`: log P(label tokens | prompt) for label tasks and calibration;
- `reference_nll`: teacher-forced loss of reference answers (perplexity as an evaluation metric);
- `shifted_logits` (module function): the aligned logits eval loss and preference log-probs share.

Determinism (greedy output must not depend on how prompts were batched, and base vs tuned must be comparable):
- LEFT padding with an attention mask, so every row's last real token sits at the end of the batch and the first
  new token of every row is produced at the same step; the model derives position ids from the mask.
- the model's saved generation defaults are swapped for transformers' bare ones during the call: transformers 5
  fills every field left unset in a passed `GenerationConfig` from `model.generation_config`, so a checkpoint
  shipping `repetition_penalty` or `do_sample` would otherwise change, or randomise, "greedy" output.
- the new tokens of each row are cut at its first stop id before decoding, so whatever `generate` writes after a
  row has finished (pad ids, which need not be special tokens) never reaches the text.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

from tuneforge.console import make_progress
from tuneforge.errors import TuneforgeError
from tuneforge.models.decoding import fast_greedy_target, greedy_batch, merged_lora
from tuneforge.models.heads import SCORE_CHUNK_POSITIONS, decoder_and_head

#: PEFT's name for "no adapter" in a mixed-adapter batch (`adapter_names=[...]`).
BASE_ADAPTER = "__base__"


@dataclass(frozen=True)
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (a stop token or stop string) or "length" (max_new_tokens reached)
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


# ------------------------------------------------------------------------------------------- shared helpers
@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Put the model in eval mode (dropout off) and give it back in the mode it came in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextmanager
def bare_generation_defaults(model: torch.nn.Module) -> Iterator[None]:
    """Replace the saved generation defaults of every module in `model` with transformers' global ones.

    Every module is visited because wrappers (a PEFT model around the causal LM) call the inner model's `generate`,
    which reads the inner model's `generation_config`. The originals are put back even if generation fails.
    """
    from transformers import GenerationConfig

    saved = []
    for module in model.modules():
        config = getattr(module, "generation_config", None)
        if isinstance(config, GenerationConfig):
            saved.append((module, config))
            module.generation_config = GenerationConfig()
    try:
        yield
    finally:
        for module, config in saved:
            module.generation_config = config


def model_device(model) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def length_sorted_batches(sequences: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Index groups of similar length, longest first; each group is one forward batch.

    Longest first so the slowest batch runs while the progress bar's rate estimate is still young (the remaining
    time errs long rather than promising too much) and so an out-of-memory error shows up at once, not at the end.
    Ties keep the original order, which keeps batching reproducible.
    """
    order = sorted(range(len(sequences)), key=lambda i: (-len(sequences[i]), i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def budget_batches(order: Sequence[int], prompt_lengths: Sequence[int], limits: Sequence[int], batch_size: int,
                   batch_tokens: int | None = None) -> list[list[int]]:
    """`order` cut into consecutive batches of at most `batch_size` prompts and, with `batch_tokens`, at most that
    many cache positions (rows x (longest prompt + largest new-token limit) of the batch). Short prompts then go
    many to a batch and long ones few; a prompt over the budget on its own still gets a batch."""
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for index in order:
        grown = max(width, prompt_lengths[index] + limits[index])
        if current and (len(current) >= batch_size or
                        (batch_tokens is not None and (len(current) + 1) * grown > batch_tokens)):
            batches.append(current)
            current, grown = [], prompt_lengths[index] + limits[index]
        current.append(index)
        width = grown
    if current:
        batches.append(current)
    return batches


def shifted_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Logits aligned with `input_ids[:, 1:]`: row b, position t predicts token t + 1 of row b.

    Prompt tuning (and p-tuning) prepend virtual-token positions to the *output* logits, so the model returns
    `n_virtual + T` positions for `T` input tokens; only the last `T` belong to the real tokens. Every scorer
    (eval loss, preference log-probs, label log-probs, reference NLL) takes its logits from here so that none can
    read a virtual position as a real one.
    """
    device = model_device(model)
    logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
    return logits[:, -input_ids.shape[1]:][:, :-1]


def right_pad(rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int = 0):
    """(ids, loss mask) pairs -> right-padded (input_ids, attention_mask, loss_mask) tensors."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for row, (ids, mask) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
        loss_mask[row, : len(ids)] = torch.as_tensor(list(mask), dtype=torch.bool)
    return input_ids, attention_mask, loss_mask


def masked_token_logps(model, rows: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int = 8,
                       progress=None) -> list[tuple[float, int]]:
    """Per (ids, loss mask) row: (summed log-prob of the tokens whose mask is 1, their count).

    Token t counts when mask[t] == 1 and is predicted from position t - 1; a masked first token has no prediction
    and is skipped. Right padding (causal attention: real tokens never see the padding after them), no grad,
    the model's train/eval mode restored. `progress` is an optional (bar, task) pair advanced per row.
    """
    out: list[tuple[float, int] | None] = [None] * len(rows)
    parts = decoder_and_head(model)
    with eval_mode(model), torch.no_grad():
        for batch in length_sorted_batches([ids for ids, _ in rows], batch_size):
            input_ids, attention_mask, loss_mask = right_pad([rows[i] for i in batch])
            selected = loss_mask[:, 1:]
            targets = input_ids[:, 1:]
            token_logp = torch.zeros(targets.shape, dtype=torch.float32)
            if selected.any():
                token_logp[selected] = _scored_logps(model, parts, input_ids, attention_mask, selected,
                                                     targets[selected]).cpu()
            sums = token_logp.sum(dim=1).tolist()
            counts = selected.sum(dim=1).tolist()
            for row, index in enumerate(batch):
                out[index] = (float(sums[row]), int(counts[row]))
            if progress is not None:
                progress[0].advance(progress[1], len(batch))
    return [value for value in out if value is not None]


def _scored_logps(model, parts, input_ids, attention_mask, selected, targets) -> torch.Tensor:
    """log P(target) at the selected positions of `shifted_logits`' grid. For a model with a plain LM head the head
    runs on those positions only (the same numbers without a batch x length x vocabulary tensor), in chunks."""
    device = model_device(model)
    if parts is None:
        logits = shifted_logits(model, input_ids, attention_mask)
        hidden, head = logits[selected.to(logits.device)], None
    else:
        decoder, head = parts
        hidden = decoder(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                         use_cache=False).last_hidden_state[:, :-1][selected.to(device)]
    targets = targets.to(hidden.device)
    pieces = []
    for start in range(0, len(targets), SCORE_CHUNK_POSITIONS):
        chunk = hidden[start:start + SCORE_CHUNK_POSITIONS]
        logits = (head(chunk) if head is not None else chunk).float()
        piece_targets = targets[start:start + SCORE_CHUNK_POSITIONS, None]
        pieces.append(torch.log_softmax(logits, -1).gather(-1, piece_targets).squeeze(-1))
    return torch.cat(pieces)


def stop_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends an answer: the tokenizer's eos, the generation config's eos (an int or a list) and the
    chat template's end-of-turn token (what the template writes right after an assistant message)."""
    ids: list[int] = []
    candidates = [getattr(tokenizer, "eos_token_id", None)]
    gen_config = getattr(model, "generation_config", None)
    gen_eos = getattr(gen_config, "eos_token_id", None)
    candidates.extend(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])
    candidates.append(end_of_turn_id(tokenizer))
    for token_id in candidates:
        if token_id is not None and int(token_id) not in ids:
            ids.append(int(token_id))
    return ids


def end_of_turn_id(tokenizer) -> int | None:
    """The special token a chat template puts right after an assistant message (<|im_end|>, <|eot_id|>, </s>...).

    Found by rendering a one-turn conversation and reading the first token after the answer; None when the model
    has no chat template or the template writes no special token there.
    """
    if not getattr(tokenizer, "chat_template", None):
        return None
    marker = "tuneforge-answer-marker"
    try:
        turn = [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}]
        text = tokenizer.apply_chat_template(turn, tokenize=False)
    except Exception:  # noqa: BLE001 - templates raise anything (jinja errors, role checks); no marker then
        return None
    tail = text.split(marker, 1)[-1] if marker in text else ""
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    return int(ids[0]) if ids and ids[0] in special else None


def _pad_id(tokenizer, stop_ids: list[int]) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    # Padding positions are masked out, so any id works; eos is the conventional stand-in.
    if stop_ids:
        return stop_ids[0]
    raise ValueError("the tokenizer has neither a pad token nor an eos token; batched generation needs one of them")


def finish_tokens(token_ids: list[int], stop_ids: set[int], decode, stop: Sequence[str],
                  reason: str = "length") -> tuple[list[int], str, str]:
    """Cut a row's new tokens at its first stop id, then its text at the first stop string and its tokens at the
    shortest prefix that decodes to that text (so usage counts what the client gets). Every engine finishes its
    rows here (tuneforge, the server's continuous loop, llama.cpp, vLLM)."""
    for position, token_id in enumerate(token_ids):
        if token_id in stop_ids:
            token_ids, reason = token_ids[:position], "stop"
            break
    text = decode(token_ids)
    cuts = [text.find(s) for s in stop if s and s in text]
    if not cuts:
        return token_ids, text, reason
    text = text[: min(cuts)]
    for k in range(len(token_ids) + 1):
        if len(decode(token_ids[:k])) >= len(text):
            return token_ids[:k], text, "stop"
    return token_ids, text, "stop"


# ------------------------------------------------------------------------------------------------ the engine
class InferenceEngine:
    """A loaded model + tokenizer that generates and scores; see the module docstring."""

    supports_logprobs = True
    #: Greedy calls without per-prompt adapters use models/decoding.py (False: transformers' generate for all).
    fast_greedy = True
    #: In that loop, fold the active LoRA adapter into a copy of the weights for the call.
    merge_lora = True
    #: Default KV-cache positions per generation batch (see `generate`'s batch_tokens); None: count prompts only.
    batch_tokens: int | None = None
    #: In that loop, compute a batch's common prompt prefix once.
    share_prefix = True
    #: Mixed-adapter batches run LoRA Linear layers as two stacked matmuls (integrations/peft_mixed_lora.py) instead
    #: of PEFT's loop over the adapters (False: PEFT's own path); read at every adapter load and removal.
    stacked_lora = True

    def __init__(self, model, tokenizer, name: str = "model"):
        self.model, self.tokenizer, self.name = model, tokenizer, name

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_ref(cls, ref, *, dtype: str = "float32", chat_template_path: str | None = None) -> InferenceEngine:
        """Load what a `ModelRef` names: a base (catalog, folder, .gguf, hub id), a run, or an adapter on a base."""
        from tuneforge.models.loading import load_model, load_tokenizer
        from tuneforge.models.sources import resolve_model

        if ref.kind in ("endpoint", "registry"):
            raise TuneforgeError(f"{ref.source}: a {ref.kind} reference is not a local model",
                                 hint="resolve registry references first (tuneforge.registry.release."
                                      "resolve_model_ref); endpoints are evaluated through eval.endpoint")
        base_ref = ref.base if ref.adapter_path else ref
        resolved = resolve_model(base_ref.model_path)
        model = load_model(resolved, dtype)
        engine = cls(model, load_tokenizer(resolved, chat_template_path), name=ref.source)
        if ref.adapter_path:
            engine.add_adapter(ref.adapter_name, ref.adapter_path)
            engine.model.set_adapter(ref.adapter_name)
        return engine

    def add_adapter(self, name: str, path: str) -> None:
        """Attach a PEFT adapter folder under `name`; the base weights stay in memory once."""
        from peft import PeftModel

        if name == BASE_ADAPTER:
            raise TuneforgeError(f"adapter name {BASE_ADAPTER!r} is reserved for the base model")
        if isinstance(self.model, PeftModel):
            if name in self.model.peft_config:
                raise TuneforgeError(f"an adapter named {name!r} is already loaded")
            self.model.load_adapter(str(path), adapter_name=name)
        else:
            self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
        self.model.eval()
        self._adapters_changed()

    def remove_adapter(self, name: str) -> None:
        """Detach adapter `name` and free its weights; with the last one gone the bare base model is back."""
        if name not in self.adapters:
            raise TuneforgeError(f"no adapter named {name!r} is loaded")
        from tuneforge.integrations import peft_mixed_lora

        if len(self.adapters) == 1:
            self.model = self.model.unload()  # LoRA layers replaced by the untouched base layers
        else:
            peft_mixed_lora.delete_adapter(self.model, name)
        self.model.eval()
        self._adapters_changed()

    def _adapters_changed(self) -> None:
        """(Re)patch the LoRA layers for stacked mixed-adapter batches and drop their stacks, which copy the
        weights of the adapters loaded until now."""
        from tuneforge.integrations import peft_mixed_lora

        if self.stacked_lora:
            peft_mixed_lora.prepare(self.model)
        else:
            peft_mixed_lora.restore(self.model)

    @property
    def adapters(self) -> list[str]:
        return list(getattr(self.model, "peft_config", {}) or {})

    # ------------------------------------------------------------------ rendering
    def prompt_ids(self, item: dict | list[dict] | str) -> list[int]:
        """Token ids of a prompt: chat messages (a list, or an item's "messages") rendered with the model's own
        template plus its generation prompt, or a raw prompt string (an item's "prompt") with BOS."""
        if isinstance(item, dict):
            item = item["messages"] if item.get("messages") is not None else item["prompt"]
        if isinstance(item, str):
            return list(self.tokenizer(item, add_special_tokens=True)["input_ids"])
        if not getattr(self.tokenizer, "chat_template", None):
            raise TuneforgeError(f"{self.name}: the tokenizer has no chat template to render chat messages",
                                 hint="use a model with a chat template, or prompt/completion data")
        text = self.tokenizer.apply_chat_template(item, tokenize=False, add_generation_prompt=True)
        # The template carries its own special tokens; adding BOS again would change the prompt.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        prompts: Sequence[list[int] | dict | list[dict] | str],
        *,
        max_new_tokens: int | Sequence[int],
        batch_size: int = 16,
        batch_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
        adapters: Sequence[str | None] | None = None,
        progress: bool = True,
        description: str = "generating",
        on_step: Callable[[list[int], list[int]], None] | None = None,
    ) -> list[Completion]:
        """Completions in the prompts' order. Prompts are token ids, items, message lists or raw strings.

        Batches hold at most `batch_size` prompts and, with `batch_tokens`, at most that many KV-cache positions
        (rows x (longest prompt + largest limit)), so short prompts batch widely and long ones stay within memory.
        temperature 0 is greedy (argmax); above 0 samples with `top_p`, seeded by `seed` (reproducible for the
        same prompts and batch size). `adapters` names an adapter per prompt (None or BASE_ADAPTER: the base);
        different adapters share one batch through PEFT's mixed-adapter forward (its LoRA Linear layers stacked,
        see `stacked_lora`).

        `max_new_tokens` may be one limit per prompt (a server batching requests that asked for different
        lengths): a batch runs to its largest limit and each row is cut at its own, so a row's tokens are the same
        as if it had run alone with its limit. `on_step(prompt_indices, token_ids)` is called after every decoding
        step with the batch's prompt indices and the token each row just produced (streaming); rows that have
        already finished keep receiving pad ids, which callers ignore after the row's first stop id.
        """
        from transformers import GenerationConfig

        limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
        if len(limits) != len(prompts):
            raise ValueError(f"{len(limits)} max_new_tokens values for {len(prompts)} prompts")
        if any(limit <= 0 for limit in limits):
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"temperature must be >= 0 and top_p in (0, 1], got {temperature} and {top_p}")
        batch_tokens = self.batch_tokens if batch_tokens is None else batch_tokens
        if batch_tokens is not None and batch_tokens <= 0:
            raise ValueError(f"batch_tokens must be positive, got {batch_tokens}")
        ids = [p if _is_token_ids(p) else self.prompt_ids(p) for p in prompts]
        for index, prompt in enumerate(ids):
            if len(prompt) == 0:
                raise ValueError(f"prompt {index} is empty; generation needs at least one prompt token")
        if not ids:
            return []
        names = self._adapter_names(adapters, len(ids))

        stop_ids = stop_token_ids(self.model, self.tokenizer)
        pad_id = _pad_id(self.tokenizer, stop_ids)
        sampled = temperature > 0
        # Fields left unset take transformers' neutral global defaults (no penalties, no n-gram blocking) because
        # the model's own defaults are swapped out below; stop ids were read from them first.
        gen_config = GenerationConfig(
            max_new_tokens=max(limits), do_sample=sampled, num_beams=1, use_cache=True,
            eos_token_id=stop_ids or None, pad_token_id=pad_id,
            **({"temperature": temperature, "top_p": top_p, "top_k": 0} if sampled else {}),
        )
        device = model_device(self.model)
        out: list[Completion | None] = [None] * len(ids)

        def decode(tokens: list[int]) -> str:
            return self.tokenizer.decode(tokens, skip_special_tokens=True)

        generator_seed = seed if seed is not None else (0 if sampled else None)
        # Greedy requests without per-prompt adapters (evaluation) run the leaner loop of models/decoding.py.
        fast = None
        if self.fast_greedy and not sampled and (adapters is None or not self.adapters):
            fast = fast_greedy_target(self.model)
        merging = merged_lora(fast) if fast is not None and self.merge_lora else nullcontext()
        with eval_mode(self.model), bare_generation_defaults(self.model), torch.no_grad(), merging, \
                make_progress(progress) as bar:
            task = bar.add_task(description, total=len(ids))
            # Same-adapter prompts first, then by length: mixed batches work, but fewer adapters per batch is faster.
            order = sorted(range(len(ids)), key=lambda i: (names[i] or "", -len(ids[i]), i))
            start = 0
            for batch_indices in budget_batches(order, [len(p) for p in ids], limits, batch_size, batch_tokens):
                if fast is not None:
                    step = None if on_step is None else (lambda tokens, rows=batch_indices: on_step(rows, tokens))
                    new_tokens = greedy_batch(fast, [ids[i] for i in batch_indices],
                                              [limits[i] for i in batch_indices], set(stop_ids), pad_id,
                                              share_prefix=self.share_prefix, on_step=step)
                else:
                    new_tokens = self._generate_batch(ids, batch_indices, names, limits, gen_config, pad_id,
                                                      adapters is not None, generator_seed, start, on_step, device)
                for row, index in enumerate(batch_indices):
                    row_tokens = new_tokens[row][: limits[index]]
                    kept, text, reason = finish_tokens(row_tokens, set(stop_ids), decode, stop)
                    out[index] = Completion(text=text, token_ids=kept, finish_reason=reason,
                                            prompt_tokens=len(ids[index]))
                bar.advance(task, len(batch_indices))
                start += len(batch_indices)
        return [c for c in out if c is not None]

    def _generate_batch(self, ids, batch_indices, names, limits, gen_config, pad_id, per_prompt_adapters: bool,
                        generator_seed, start, on_step, device) -> list[list[int]]:
        """One batch through transformers' `generate` (sampling, per-prompt adapters, non-LoRA PEFT methods)."""
        width = max(len(ids[i]) for i in batch_indices)
        input_ids = torch.full((len(batch_indices), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch_indices), width), dtype=torch.long)
        for row, index in enumerate(batch_indices):
            input_ids[row, width - len(ids[index]):] = torch.tensor(ids[index], dtype=torch.long)
            attention_mask[row, width - len(ids[index]):] = 1
        extra = {}
        if per_prompt_adapters and self.adapters:
            extra["adapter_names"] = [names[i] or BASE_ADAPTER for i in batch_indices]
        if generator_seed is not None:
            torch.manual_seed(generator_seed + start)
        if on_step is not None:
            extra["streamer"] = _StepStreamer(batch_indices, on_step)
        batch_config = gen_config
        if max(limits[i] for i in batch_indices) != gen_config.max_new_tokens:
            batch_config = copy.copy(gen_config)
            batch_config.max_new_tokens = max(limits[i] for i in batch_indices)
        output = self.model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                     generation_config=batch_config, **extra)
        return output[:, width:].tolist()

    def answer(self, items: Sequence[dict], *, max_new_tokens: int, batch_size: int = 16,
               description: str = "generating", progress: bool = True) -> list[str]:
        """Greedy answers to evaluation items (the interface evaluation shares with endpoint models)."""
        return [c.text for c in self.generate(items, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                              description=description, progress=progress)]

    def sample(self, items: Sequence[dict], *, n: int, max_new_tokens: int, temperature: float, batch_size: int = 16,
               seed: int = 0, description: str = "sampling") -> list[list[str]]:
        """n answers per item (seeded sampling; temperature 0 gives n copies of the greedy answer)."""
        flat = [item for item in items for _ in range(n)]
        texts = [c.text for c in self.generate(flat, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                               temperature=temperature, seed=seed, description=description)]
        return [texts[i * n:(i + 1) * n] for i in range(len(items))]

    def _adapter_names(self, adapters, count: int) -> list[str | None]:
        if adapters is None:
            return [None] * count
        if len(adapters) != count:
            raise ValueError(f"{len(adapters)} adapter names for {count} prompts")
        known = set(self.adapters)
        for name in adapters:
            if name not in (None, BASE_ADAPTER) and name not in known:
                raise TuneforgeError(f"no adapter named {name!r} is loaded",
                                     hint=f"loaded: {', '.join(sorted(known)) or '(none)'}")
        return [None if n == BASE_ADAPTER else n for n in adapters]

    # ------------------------------------------------------------------ scoring
    def label_logprobs(self, items: Sequence, labels: list[str], batch_size: int = 16) -> list[dict[str, float]]:
        """Per item: {label: summed log-probability of the label's tokens right after the item's prompt}."""
        label_ids = {label: self.tokenizer(label, add_special_tokens=False)["input_ids"] for label in labels}
        empty = [label for label, ids in label_ids.items() if not ids]
        if empty:
            raise ValueError(f"labels {empty} tokenise to nothing")
        prompts = [p if _is_token_ids(p) else self.prompt_ids(p) for p in items]
        jobs = [(i, label) for i in range(len(prompts)) for label in labels]
        rows = [(list(prompts[i]) + label_ids[label], [0] * len(prompts[i]) + [1] * len(label_ids[label]))
                for i, label in jobs]
        scored = masked_token_logps(self.model, rows, batch_size)
        out: list[dict[str, float]] = [{} for _ in prompts]
        for (i, label), (logp, _) in zip(jobs, scored):
            out[i][label] = logp
        return out

    def reference_nll(self, items: Sequence[dict], batch_size: int = 16) -> list[tuple[float, int]]:
        """Per item: (negative log-likelihood of its reference answer given its prompt, answer token count).

        Chat items: the answer is the assistant turn the template renders after the generation prompt, end-of-turn
        token included (what a tuned model must learn to emit); raw prompts: the reference followed by EOS.
        """
        rows = [self.answer_row(item) for item in items]
        return [(-logp, count) for logp, count in masked_token_logps(self.model, rows, batch_size)]

    def answer_row(self, item: dict) -> tuple[list[int], list[int]]:
        """(token ids of prompt + reference answer, 1 where a token is part of the answer): the row `reference_nll`
        scores; training-side users (EWC's Fisher rows) take the same tokens from here."""
        prompt = self.prompt_ids(item)
        if item.get("messages") is not None:
            conversation = list(item["messages"]) + [{"role": "assistant", "content": item["reference"]}]
            text = self.tokenizer.apply_chat_template(conversation, tokenize=False)
            full = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if full[: len(prompt)] != prompt:
                raise TuneforgeError(f"item {item.get('id')!r}: the chat template renders the answered conversation "
                                     "with a different prefix than the generation prompt; perplexity is undefined")
            answer = full[len(prompt):]
            turn_end = end_of_turn_id(self.tokenizer)
            if turn_end in answer:  # the template's trailing newline after the end-of-turn token is not the answer
                answer = answer[: answer.index(turn_end) + 1]
        else:
            eos = self.tokenizer.eos_token_id
            answer = list(self.tokenizer(item["reference"], add_special_tokens=False)["input_ids"])
            answer += [eos] if eos is not None else []
        return prompt + answer, [0] * len(prompt) + [1] * len(answer)

    # ------------------------------------------------------------------ adapters on/off
    def base_context(self):
        """Run the base model for a while (the adapters switched off), when there are adapters."""
        disable = getattr(self.model, "disable_adapter", None)
        return disable() if callable(disable) and self.adapters else nullcontext()


class _StepStreamer:
    """transformers' streamer protocol: `put` gets the prompt ids once, then each step's new token per row."""

    def __init__(self, indices: list[int], callback: Callable[[list[int], list[int]], None]):
        self.indices, self.callback, self.prompt_seen = indices, callback, False

    def put(self, value) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.callback(self.indices, [int(t) for t in value.reshape(-1).tolist()])

    def end(self) -> None:
        pass


def _is_token_ids(prompt) -> bool:
    return isinstance(prompt, (list, tuple)) and (not prompt or isinstance(prompt[0], int))
