"""Hold a LoRA run's frozen base in bf16 while it trains (`training.frozen_base_dtype`), in model.dtype around it.

Evaluation before and after training, the merge check and the exports run in model.dtype: a float32 forward gives
the same greedy answers whatever the batch (the engine's identical-predictions property; in bf16 31 of the
quickstart's 100 base answers changed with the batch size), and the evaluated model is then the exported one. The
cast back is exact: every bf16 value is a float32 value, so after training the base holds the very weights the
adapter was trained against.
"""
from __future__ import annotations

import torch


def cast_frozen(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Cast every floating-point parameter nothing trains to `dtype`, in place (tied weights stay tied: the one
    Parameter object is kept, its data replaced); returns how many parameters were cast."""
    cast = 0
    for param in model.parameters():
        if not param.requires_grad and param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
            cast += 1
    return cast
