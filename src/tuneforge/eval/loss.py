"""Token-weighted evaluation loss over the tokens that carry loss in training (the assistant's answers).

The number must be comparable across runs with different batch sizes, so it is the sum of per-token cross-entropy
over every loss-carrying token divided by their count, never a mean of per-batch means (which would weight a token
in a short batch more than one in a long batch).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from tuneforge.console import make_progress
from tuneforge.models.inference import masked_token_logps


def _as_int_list(value, field: str, index: int) -> list[int]:
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise ValueError(f"example {index}: {field!r} must be a sequence of ints")
    return [int(v) for v in value]


def _validated(examples: list[dict]) -> list[tuple[list[int], list[int]]]:
    rows = []
    for index, example in enumerate(examples):
        for field in ("input_ids", "assistant_masks"):
            if field not in example:
                raise ValueError(f"example {index} has no {field!r}; eval_loss needs tokenised, masked examples")
        ids = _as_int_list(example["input_ids"], "input_ids", index)
        mask = _as_int_list(example["assistant_masks"], "assistant_masks", index)
        if len(ids) != len(mask):
            raise ValueError(f"example {index}: {len(ids)} input_ids but {len(mask)} assistant_masks")
        rows.append((ids, mask))
    return rows


def eval_loss(model, examples: list[dict], *, batch_size: int = 8, progress: bool = True) -> dict:
    """Mean cross-entropy (nats per token) over masked tokens -> {"loss", "perplexity", "tokens"}.

    Token t counts when `assistant_masks[t] == 1` and is predicted from the logits at t - 1 (see
    `tuneforge.models.inference.masked_token_logps`, which every log-prob scorer shares); a masked first token has
    no prediction and is skipped.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    rows = _validated(examples)
    with make_progress(progress) as bar:
        task = bar.add_task("eval loss", total=len(rows))
        scored = masked_token_logps(model, rows, batch_size, progress=(bar, task))
    total_tokens = sum(count for _, count in scored)
    if total_tokens == 0:
        raise ValueError(
            "no token carries loss in the evaluation examples (every assistant_masks is 0 past the first token)"
        )
    loss = -sum(logp for logp, _ in scored) / total_tokens
    return {"loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf, "tokens": total_tokens}
