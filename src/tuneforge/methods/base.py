"""The interface every method implements."""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path


def trainable_parameter_report(model) -> dict:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total, "share": trainable / total if total else 0.0}


class Method(ABC):
    name: str = ""
    #: True when the method keeps the base weights untouched, so the base model can be evaluated by
    #: switching the adaptation off instead of loading a second copy.
    has_adapter: bool = False
    #: False when the adaptation cannot be folded into the weights (prefix / prompt tuning add inputs, not deltas).
    can_merge: bool = True

    def __init__(self, config):
        self.config = config

    def load_base(self, resolved, dtype: str = "float32"):
        """Load the base model the method adapts; QLoRA overrides this to load 4-bit weights."""
        from tuneforge.models.loading import load_model

        return load_model(resolved, dtype)

    @abstractmethod
    def apply(self, model):
        """Return the model to train (same object or a wrapper), with exactly the method's parameters trainable."""

    def trainable_parameters(self, model) -> dict:
        return trainable_parameter_report(model)

    def save_adapter(self, model, path: Path) -> bool:
        """Save the method's own artifact; return False when the method has none."""
        return False

    @abstractmethod
    def merged_model(self, model):
        """A plain transformers model with the adaptation folded into the weights."""

    def base_context(self, model):
        """Context manager under which `model` behaves as the untouched base (adapter methods only)."""
        raise NotImplementedError(f"method {self.name!r} has no switchable adapter")
