"""Token-weighted evaluation loss over the tokens that carry loss in training (the assistant's answers).

The number must be comparable across runs with different batch sizes, so it is the sum of per-token cross-entropy
over every loss-carrying token divided by their count, never a mean of per-batch means (which would weight a token
in a short batch more than one in a long batch).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tuneforge.eval.generation import eval_mode, length_sorted_batches, make_progress


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


def right_pad(rows: list[tuple[list[int], list[int]]], pad_id: int = 0):
    """(ids, loss mask) pairs -> right-padded (input_ids, attention_mask, loss_mask) tensors."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for row, (ids, mask) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
        loss_mask[row, : len(ids)] = torch.tensor(mask, dtype=torch.bool)
    return input_ids, attention_mask, loss_mask


def eval_loss(model, examples: list[dict], *, batch_size: int = 8, progress: bool = True) -> dict:
    """Mean cross-entropy (nats per token) over masked tokens -> {"loss", "perplexity", "tokens"}.

    Token t counts when `assistant_masks[t] == 1` and is predicted from the logits at t - 1; a masked first token
    has no prediction and is skipped. Batches are right-padded with an attention mask (causal attention means real
    tokens never see the padding after them) and run under `no_grad`; the model's train/eval mode is restored.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    rows = _validated(examples)
    device = next(model.parameters()).device
    total_loss = 0.0
    total_tokens = 0

    with eval_mode(model), torch.no_grad(), make_progress(progress) as bar:
        task = bar.add_task("eval loss", total=len(rows))
        for batch_indices in length_sorted_batches([ids for ids, _ in rows], batch_size):
            input_ids, attention_mask, loss_mask = right_pad([rows[i] for i in batch_indices])
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
            # Prompt tuning prepends virtual-token positions to the logits; only the real tokens' tail is scored.
            logits = logits[:, -input_ids.shape[1]:]
            # Position t's logits predict token t + 1; padding never carries loss because loss_mask is 0 there.
            targets_mask = loss_mask[:, 1:].to(logits.device)
            selected = logits[:, :-1][targets_mask].float()
            targets = input_ids[:, 1:].to(logits.device)[targets_mask]
            if targets.numel():
                total_loss += F.cross_entropy(selected, targets, reduction="sum").item()
                total_tokens += int(targets.numel())
            bar.advance(task, len(batch_indices))

    if total_tokens == 0:
        raise ValueError(
            "no token carries loss in the evaluation examples (every assistant_masks is 0 past the first token)"
        )
    loss = total_loss / total_tokens
    return {"loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf, "tokens": total_tokens}
