"""When transformers' Trainer leaves a micro-batch's loss undivided by the gradient-accumulation steps.

`Trainer.training_step` divides the loss `compute_loss` returns by the accumulation steps, unless the loss is
already normalised over the whole accumulated batch (by `num_items_in_batch`): a trainer class may declare it
(`loss_is_scaled_for_ga`, TRL's trainers do), else the Trainer infers it from `model_accepts_loss_kwargs` and
`compute_loss_func`. A term added to the loss (the proximal penalty) must follow the same rule, so this reads it
from the trainer exactly as `training_step` does (transformers 5.19+).
"""
from __future__ import annotations


def loss_scaled_for_accumulation(trainer, num_items_in_batch) -> bool:
    declared = getattr(trainer, "loss_is_scaled_for_ga", None)
    if declared is not None:
        return bool(declared)
    return bool((getattr(trainer, "model_accepts_loss_kwargs", False) and num_items_in_batch is not None)
                or getattr(trainer, "compute_loss_func", None) is not None)
