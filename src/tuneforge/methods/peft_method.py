"""What every PEFT-backed method shares: wrap with get_peft_model, save in PEFT format, merge, switch off."""
from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

from tuneforge.errors import ConfigError
from tuneforge.methods.base import Method


class PeftMethod(Method):
    has_adapter = True

    @abstractmethod
    def peft_config(self, model):
        """The peft.PeftConfig for `model` (the model is passed so presets can look at its module names)."""

    def apply(self, model):
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config(model))

    def save_adapter(self, model, path: Path) -> bool:
        model.save_pretrained(path)
        return True

    def merged_model(self, model):
        if not self.can_merge:
            raise ConfigError(
                f"method {self.name!r} cannot be merged into the base weights: "
                "it adds learned inputs, not weight deltas",
                hint="set export.merged=false and serve the PEFT adapter on the base model",
            )
        # merge_and_unload folds the adaptation into the base weights and returns the plain transformers model;
        # the PEFT wrapper is unusable afterwards, so callers save the adapter first.
        return model.merge_and_unload()

    def base_context(self, model):
        return model.disable_adapter()


def peft_task_type(model):
    """SEQ_CLS for a sequence classifier (the reward objective's model), CAUSAL_LM for everything else.

    Under SEQ_CLS, PEFT puts the classification head (`score` / `classifier`) in modules_to_save: the head is trained
    in full and saved inside the adapter, so adapter/ alone rebuilds the reward model on its base.
    """
    from peft import TaskType

    if type(model).__name__.endswith("ForSequenceClassification"):
        return TaskType.SEQ_CLS
    return TaskType.CAUSAL_LM


def check_module_names(model, names, option: str, example: str) -> None:
    """Fail with the option's name when a requested module name does not exist in the model."""
    present = {module_name.split(".")[-1] for module_name, _ in model.named_modules()}
    missing = [name for name in names if name not in present]
    if missing:
        raise ConfigError(
            f"{option}: {missing} not found in {type(model).__name__}",
            hint=f"use the module names of this architecture (e.g. {example} for Llama)",
        )
