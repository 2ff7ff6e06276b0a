"""How weights are adapted. Each method is one self-contained module; the runner picks one by name.

A method loads its base model (`load_base`; QLoRA loads 4-bit), turns it into the model the trainer optimises
(`apply`), saves its own artifact (a PEFT adapter, or nothing extra for full/freeze), produces a plain merged
model for export where merging exists (`merged_model`), and switches itself off for base evaluation where the base
weights stay untouched (`base_context`).
"""
from __future__ import annotations

from tuneforge.methods.base import Method, trainable_parameter_report
from tuneforge.methods.freeze import FreezeMethod
from tuneforge.methods.full import FullFineTuning
from tuneforge.methods.ia3 import IA3Method
from tuneforge.methods.lora import LoraMethod
from tuneforge.methods.prefix import PrefixTuningMethod
from tuneforge.methods.prompt import PromptTuningMethod
from tuneforge.methods.qlora import QLoraMethod

METHODS: dict[str, type[Method]] = {
    method.name: method
    for method in (FullFineTuning, LoraMethod, QLoraMethod, IA3Method, PrefixTuningMethod, PromptTuningMethod,
                   FreezeMethod)
}


def get_method(config) -> Method:
    """`config` is the run's MethodConfig."""
    return METHODS[config.name](config)


__all__ = ["METHODS", "Method", "get_method", "trainable_parameter_report"]
