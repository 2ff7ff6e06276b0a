"""Keep trainable parameters in the dtype the method gave them while a TRL trainer is built.

Upstream behaviour worked around (TRL 1.16): DPOTrainer, KTOTrainer, GRPOTrainer, RLOOTrainer and RewardTrainer cast
every trainable parameter of a model flagged `is_loaded_in_4bit`/`is_loaded_in_8bit` to bfloat16 in __init__
(citing the QLoRA paper), whatever compute dtype was configured; SFTTrainer does not. A QLoRA run would then keep fp32
adapters under SFT but train bf16 adapters under DPO/KTO/RL, and on CPU (fp32 compute) pay for bf16 matmuls in the
LoRA path. PEFT's own default - adapters upcast to fp32, the compute dtype applied per forward - is what every
objective gets here, so one method behaves the same under every objective.
"""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def trainable_dtypes_kept(model):
    before = {name: param.dtype for name, param in model.named_parameters() if param.requires_grad}
    yield
    for name, param in model.named_parameters():
        if name in before and param.dtype != before[name]:
            param.data = param.data.to(before[name])
