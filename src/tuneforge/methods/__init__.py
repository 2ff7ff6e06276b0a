"""How weights are adapted. Each method is one self-contained module; the runner picks one by name.

A method turns a loaded base model into the model the trainer optimises, saves its own artifact
(a PEFT adapter, or nothing extra for full fine-tuning), and produces a plain merged model for export.
"""
from __future__ import annotations

from tuneforge.methods.base import Method, trainable_parameter_report
from tuneforge.methods.full import FullFineTuning
from tuneforge.methods.lora import LoraMethod

METHODS: dict[str, type[Method]] = {
    FullFineTuning.name: FullFineTuning,
    LoraMethod.name: LoraMethod,
}


def get_method(config) -> Method:
    """`config` is the run's MethodConfig."""
    return METHODS[config.name](config)


__all__ = ["METHODS", "Method", "get_method", "trainable_parameter_report"]
