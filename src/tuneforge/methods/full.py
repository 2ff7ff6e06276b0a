"""Full fine-tuning: every weight is trainable."""
from __future__ import annotations

from tuneforge.methods.base import Method


class FullFineTuning(Method):
    name = "full"

    def apply(self, model):
        for param in model.parameters():
            param.requires_grad_(True)
        return model

    def merged_model(self, model):
        return model
