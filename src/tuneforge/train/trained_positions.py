"""Causal-LM loss computed only where a token is trained: the LM head and cross-entropy at trained positions.

A batch of 8 x 256 tokens over SmolLM2's 49,152-token vocabulary has 2,040 next-token positions; the quickstart trains
28% of them (the assistant's answers) and a label task about 4%. The full path projects every position through the
LM head (2,040 x 49,152 fp32 logits, ~400 MB, plus their softmax and gradient) and then ignores most of them. Here
the decoder body runs as usual, the hidden states of the positions whose *next-token* label is not -100 are picked
out, and only those go through the LM head and the cross-entropy.

The loss is the one the trainer computes: the sum of token cross-entropies divided by `num_items_in_batch` (the
trained tokens of every micro-batch of the optimizer step, so gradient accumulation normalises exactly as the HF
Trainer does) or, without it, by this batch's trained-token count. Large selections are cut into chunks of positions
whose logits are recomputed in the backward pass (activation checkpointing), so memory stays bounded when every
position is trained (continued pretraining).

`unsupported_reason` says when this would not be the same computation; callers then use the reference path.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from tuneforge.models.heads import TRAINING_CHUNK_POSITIONS, causal_lm, plain_head_reason

#: Positions scored at once (a module name of its own so tests can shrink it).
CHUNK_POSITIONS = TRAINING_CHUNK_POSITIONS


@dataclass
class TrainedPositionsLoss:
    loss: torch.Tensor  # scalar, with gradient
    trained_tokens: int  # positions scored in this batch
    entropy_sum: float  # sum of next-token entropies over them (for the trainer's `entropy` metric)
    correct: int  # positions whose label is the most likely token (for `mean_token_accuracy`)


def unsupported_reason(model) -> str | None:
    """None when `trained_positions_loss` computes exactly the model's own loss for `model`, else why not."""
    reason = plain_head_reason(model)
    if reason:
        return reason
    base, _ = causal_lm(model)
    if base.get_output_embeddings().weight.requires_grad or base.get_input_embeddings().weight.requires_grad:
        return "the LM head or the embeddings are trained"
    return None


def _chunk_statistics(head: torch.nn.Linear, hidden: torch.Tensor, targets: torch.Tensor):
    """Summed cross-entropy (with gradient), summed entropy and top-1 hits of one chunk of positions."""
    logits = head(hidden).float()  # the full path also takes the loss in fp32
    log_probs = torch.log_softmax(logits, dim=-1)
    nll = -log_probs.gather(-1, targets.unsqueeze(-1)).sum()
    with torch.no_grad():
        entropy = -(log_probs.exp() * log_probs).sum()
        correct = (logits.argmax(-1) == targets).sum()
    return nll, entropy, correct


def trained_positions_loss(model, inputs: dict, num_items_in_batch=None) -> TrainedPositionsLoss:
    """The causal-LM loss of `inputs` (which hold `labels`) from the trained positions alone.

    Call only when `unsupported_reason(model)` is None. Every input but `labels` goes to the decoder as the model's
    own forward would pass it (attention_mask, or position_ids for padding-free batches).
    """
    base, _ = causal_lm(model)
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    body_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "num_items_in_batch")}
    body_inputs["use_cache"] = False
    hidden = decoder(**body_inputs).last_hidden_state[:, :-1]  # position t predicts token t + 1
    labels = inputs["labels"][:, 1:].to(hidden.device)
    mask = labels != -100
    hidden, targets = hidden[mask], labels[mask]

    n = targets.numel()
    grad = torch.is_grad_enabled()
    nll = hidden.new_zeros((), dtype=torch.float32)
    entropy = correct = 0
    for start in range(0, n, CHUNK_POSITIONS):
        chunk_hidden, chunk_targets = hidden[start:start + CHUNK_POSITIONS], targets[start:start + CHUNK_POSITIONS]
        if grad and n > CHUNK_POSITIONS:
            from torch.utils.checkpoint import checkpoint

            chunk = checkpoint(_chunk_statistics, head, chunk_hidden, chunk_targets, use_reentrant=False)
        else:
            chunk = _chunk_statistics(head, chunk_hidden, chunk_targets)
        nll = nll + chunk[0]
        entropy += float(chunk[1])
        correct += int(chunk[2])
    if n == 0:
        # Keep the loss attached to the graph so an all-masked micro-batch backpropagates a zero instead of failing.
        nll = nll + hidden.sum() * 0.0
    denominator = torch.as_tensor(n if num_items_in_batch is None else num_items_in_batch, device=nll.device)
    loss = nll / denominator.clamp(min=1)
    return TrainedPositionsLoss(loss=loss, trained_tokens=n, entropy_sum=entropy, correct=correct)
