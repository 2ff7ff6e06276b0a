"""Gradient accumulation: (batch 1 x accumulate 8) trains like (batch 8 x accumulate 1).

Examples of very different lengths make this a real test: averaging each micro-batch's mean loss would weight a
3-token answer like a 30-token one. transformers (with TRL's SFT loss) instead divides every micro-batch's summed
token loss by `num_items_in_batch`, the trained-token count of the whole accumulated batch, so the accumulated
gradient and the logged loss equal the big batch's token mean. Padding is not counted (labels -100).
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from transformers import TrainerCallback

from tests.conftest import build_tiny_model


def rows_of_varied_length(tokenizer, n: int = 24) -> list[dict]:
    rows = []
    for i in range(n):
        prompt = tokenizer(f"Question {i}:" + " tell me more" * (i % 6), add_special_tokens=False).input_ids
        answer = tokenizer(" answer" * (1 + (i * 7) % 11) + ".", add_special_tokens=False).input_ids
        rows.append({"input_ids": prompt + answer, "assistant_masks": [0] * len(prompt) + [1] * len(answer)})
    return rows


def run_config(**training):
    from tuneforge.config.schema import RunConfig

    base = {"batch_size": 8, "batching": "padded", "learning_rate": 1e-3, "warmup_ratio": 0.0,
            "lr_scheduler": "constant", "save_every_steps": 1000, "seed": 11, "max_steps": 3}
    base.update(training)
    return RunConfig(data={"train": "unused.jsonl", "max_length": 64}, method={"name": "full"}, training=base)


class LossLog(TrainerCallback):
    def __init__(self):
        self.losses = {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses[state.global_step] = (logs["loss"], logs["grad_norm"])


def train_sft(tmp_path, tokenizer, rows, cfg, model=None):
    """Train through the SFT objective's own trainer (same arguments and collator as `tuneforge train`)."""
    from tuneforge.objectives import get_objective

    log = LossLog()
    model = model or build_tiny_model()
    trainer = get_objective(cfg.objective).build_trainer(
        cfg, model, tokenizer, SimpleNamespace(rendered={"train": rows}), tmp_path, [log])
    trainer.train()
    return trainer, log.losses


def test_accumulate_8_micro_batches_of_1_equals_one_batch_of_8(tmp_path, tokenizer):
    import torch

    torch.set_num_threads(1)
    rows = rows_of_varied_length(tokenizer)
    big, big_losses = train_sft(tmp_path / "big", tokenizer, rows, run_config(batch_size=8))
    small, small_losses = train_sft(tmp_path / "small", tokenizer, rows,
                                    run_config(batch_size=1, gradient_accumulation_steps=8))
    assert sorted(big_losses) == sorted(small_losses) == [1, 2, 3]
    for step, (loss, grad_norm) in big_losses.items():
        assert small_losses[step][0] == pytest.approx(loss, rel=1e-5), step
        assert small_losses[step][1] == pytest.approx(grad_norm, rel=1e-4), step
    # The steps moved the weights (lr 1e-3, full fine-tuning), and both runs moved them the same way.
    start = build_tiny_model().state_dict()
    moved = max((big.model.state_dict()[k] - start[k]).abs().max().item() for k in start)
    assert moved > 1e-4
    for key, tensor in big.model.state_dict().items():
        assert (small.model.state_dict()[key] - tensor).abs().max().item() < 1e-5, key
