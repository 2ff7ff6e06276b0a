"""Batched greedy generation for evaluation.

Evaluation compares a base and a tuned model on the same prompts, so generation must be deterministic and must not
depend on how prompts happen to be batched: the text for a prompt is the same whether it is generated alone or in a
batch of 16. That rests on three choices made here:

- LEFT padding with an attention mask, so every row's last real token sits at the end of the batch and the first
  new token of every row is produced at the same step; the model derives position ids from the mask, so padding
  shifts nothing.
- plain argmax decoding, whatever the model's saved generation defaults say. Passing our own `GenerationConfig` is
  not enough: transformers 5 fills every field left unset in it from `model.generation_config`, so a checkpoint
  shipping `repetition_penalty` or `do_sample` would still change, or randomise, "greedy" output. The model's
  defaults are therefore swapped for bare ones for the duration of the call (see `_bare_generation_defaults`).
- the new tokens of each row are cut at its first stop id before decoding, so whatever `generate` writes after a
  row has finished (pad ids, which need not be special tokens) never reaches the text.

Prompts are sorted by length before batching so that rows of a batch need little padding; results come back in the
caller's order.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class ItemsPerSecondColumn(ProgressColumn):
    """Mean items per second since the task started.

    rich's own speed column formats bytes, and its windowed speed needs several updates before it shows anything,
    which an evaluation of a few large batches may never give it.
    """

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed
        if not elapsed or not task.completed:
            return Text("-- items/s", style="progress.data.speed")
        return Text(f"{task.completed / elapsed:.2f} items/s", style="progress.data.speed")


def make_progress(enabled: bool) -> Progress:
    """The progress bar every evaluation loop uses; `enabled=False` keeps it silent (tests, nested calls)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        ItemsPerSecondColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


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
def _bare_generation_defaults(model: torch.nn.Module) -> Iterator[None]:
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


def stop_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends an answer: the tokenizer's eos and the generation config's eos (an int or a list)."""
    ids: list[int] = []
    candidates = [getattr(tokenizer, "eos_token_id", None)]
    gen_config = getattr(model, "generation_config", None)
    gen_eos = getattr(gen_config, "eos_token_id", None)
    candidates.extend(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])
    for token_id in candidates:
        if token_id is not None and int(token_id) not in ids:
            ids.append(int(token_id))
    return ids


def _pad_id(tokenizer, stop_ids: list[int]) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    # Padding positions are masked out, so any id works; eos is the conventional stand-in.
    if stop_ids:
        return stop_ids[0]
    raise ValueError("the tokenizer has neither a pad token nor an eos token; batched generation needs one of them")


def _cut_at_stop(token_ids: list[int], stop_ids: set[int]) -> list[int]:
    for position, token_id in enumerate(token_ids):
        if token_id in stop_ids:
            return token_ids[:position]
    return token_ids


def length_sorted_batches(sequences: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Index groups of similar length, longest first; each group is one forward batch.

    Longest first so the slowest batch runs while the progress bar's rate estimate is still young (the remaining
    time errs long rather than promising too much) and so an out-of-memory error shows up at once, not at the end.
    Ties keep the original order, which keeps batching reproducible.
    """
    order = sorted(range(len(sequences)), key=lambda i: (-len(sequences[i]), i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def _model_device(model) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def generate_greedy(
    model,
    tokenizer,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    progress: bool = True,
    description: str = "generating",
) -> list[str]:
    """Greedy continuations of already-tokenised prompts, decoded without special tokens, in the prompts' order."""
    from transformers import GenerationConfig

    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    for index, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(f"prompt {index} is empty; generation needs at least one prompt token")
    if not prompts:
        return []

    stop_ids = stop_token_ids(model, tokenizer)
    pad_id = _pad_id(tokenizer, stop_ids)
    stop_set = set(stop_ids)
    # Fields left unset here take transformers' neutral global defaults (no penalties, no n-gram blocking) because
    # the model's own defaults are swapped out below; stop ids were read from them first.
    gen_config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        use_cache=True,
        eos_token_id=stop_ids or None,
        pad_token_id=pad_id,
    )
    device = _model_device(model)
    texts: list[str | None] = [None] * len(prompts)

    with eval_mode(model), _bare_generation_defaults(model), torch.no_grad(), make_progress(progress) as bar:
        task = bar.add_task(description, total=len(prompts))
        for batch_indices in length_sorted_batches(prompts, batch_size):
            width = max(len(prompts[i]) for i in batch_indices)
            input_ids = torch.full((len(batch_indices), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(batch_indices), width), dtype=torch.long)
            for row, index in enumerate(batch_indices):
                prompt = prompts[index]
                input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
                attention_mask[row, width - len(prompt) :] = 1
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                generation_config=gen_config,
            )
            new_tokens = output[:, width:].tolist()
            for row, index in enumerate(batch_indices):
                kept = _cut_at_stop(new_tokens[row], stop_set)
                texts[index] = tokenizer.decode(kept, skip_special_tokens=True)
            bar.advance(task, len(batch_indices))
    return [text if text is not None else "" for text in texts]

