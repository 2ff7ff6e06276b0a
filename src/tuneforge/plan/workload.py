"""What one optimizer step processes, measured from the config's own data (tokenised, never guessed).

The objective prepares its data exactly as training will (same rendering, masks and truncation), so the lengths
here are the lengths the trainer sees. Batches are simulated the way the trainer builds them: length-grouped
batches are padded to their own longest row (TRL/transformers group by length in mega-batches of 50 batches),
random batches to the longest of a random draw, packed rows hold data.max_length tokens.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

#: transformers' LengthGroupedSampler sorts mega-batches of (at most) 50 batches by length.
MEGABATCH = 50


@dataclass
class Workload:
    """Sequences per example (2 for preference pairs: chosen and rejected go through the model together)."""

    examples: int
    lengths: list[int]                 # tokens of each trained sequence (pairs: chosen then rejected, interleaved)
    trained: list[int]                 # loss-carrying tokens of each sequence
    sequences_per_example: int = 1
    batches: list[tuple[int, int, int]] = field(default_factory=list)  # (rows, padded length, real tokens) per pass
    source: str = ""

    @property
    def max_length(self) -> int:
        return max(self.lengths) if self.lengths else 0

    @property
    def trained_share(self) -> float:
        """Share of the tokens that carry loss."""
        return sum(self.trained) / max(1, sum(self.lengths))


def _batches(lengths: list[int], per_example: int, batch_size: int, batching: str, max_length: int,
             seed: int) -> list[tuple[int, int, int]]:
    """(rows, padded length, real tokens) of every forward pass over one epoch."""
    examples = [lengths[i:i + per_example] for i in range(0, len(lengths), per_example)]
    if batching == "packed":
        total = sum(lengths)
        rows = max(1, math.ceil(total / max_length))
        full = [(min(batch_size, rows - i), max_length, 0) for i in range(0, rows, batch_size)]
        share = total / max(1, rows * max_length)
        return [(r, p, int(r * p * share)) for r, p, _ in full]
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    if batching == "length_grouped":
        size = MEGABATCH * batch_size
        mega = [order[i:i + size] for i in range(0, len(order), size)]
        order = [i for group in mega for i in sorted(group, key=lambda j: -max(examples[j]))]
    out = []
    for start in range(0, len(order), batch_size):
        chosen = [examples[i] for i in order[start:start + batch_size]]
        seqs = [length for example in chosen for length in example]
        out.append((len(seqs), max(seqs), sum(seqs)))
    return out


def measure_workload(run_cfg, tokenizer) -> Workload:
    """Tokenise the config's training data the way its objective does and simulate the trainer's batches."""
    from tuneforge.data.render_preference import tokenize_completion
    from tuneforge.objectives import get_objective

    objective = get_objective(run_cfg.objective)
    prepared, stand_in = objective.plan_data(run_cfg, tokenizer)
    max_length = run_cfg.data.max_length
    name = run_cfg.objective.name
    if name in ("dpo", "orpo", "reward"):
        lengths, trained = [], []
        for row in prepared.train_dataset:
            for side in ("chosen", "rejected"):
                ids = tokenize_completion(tokenizer, row["prompt"], row[side], max_length)
                lengths.append(len(ids["input_ids"]))
                trained.append(sum(ids["assistant_masks"]))
        per_example, source = 2, "chosen + rejected of every training pair, tokenised"
    elif name == "rl":
        rows = prepared.rendered.get("train") or []
        completion = run_cfg.objective.rl.max_completion_length
        lengths = [min(max_length, len(r["input_ids"]) - sum(r["assistant_masks"]) + completion) for r in rows]
        trained = [completion] * len(lengths)
        per_example, source = 1, "prompts tokenised + objective.rl.max_completion_length sampled tokens"
        if not rows:
            lengths, trained, source = [max_length], [completion], "no rendered prompts: data.max_length assumed"
    else:
        rows = prepared.rendered["train"]
        lengths = [len(r["input_ids"]) for r in rows]
        trained = [sum(r["assistant_masks"]) for r in rows]
        per_example, source = 1, stand_in or "training rows rendered and tokenised as the trainer sees them"
    training = run_cfg.training
    batches = _batches(lengths, per_example, training.batch_size, training.batching, max_length, training.seed)
    return Workload(examples=len(lengths) // per_example, lengths=lengths, trained=trained,
                    sequences_per_example=per_example, batches=batches, source=source)


def synthetic_workload(examples: int, length: int, trained: int, batch_size: int, per_example: int = 1) -> Workload:
    """Every example the same length (tests, and plans for data that cannot be read)."""
    lengths = [length] * (examples * per_example)
    batches = [(min(batch_size, examples - i) * per_example, length, min(batch_size, examples - i) * per_example
                * length) for i in range(0, examples, batch_size)]
    return Workload(examples, lengths, [trained] * len(lengths), per_example, batches, "synthetic")
