"""Selective fine-tuning: train the last N transformer blocks and/or only biases and norm weights.

Nothing is added to the model, so the trained model *is* the merged model and is saved as a plain folder.
The base weights are changed in place, so there is no switch back to the base (has_adapter stays False).
"""
from __future__ import annotations

import torch

from tuneforge.errors import ConfigError
from tuneforge.methods.base import Method


def transformer_blocks(model) -> tuple[str, torch.nn.ModuleList]:
    """The model's stack of decoder blocks: its longest ModuleList (model.layers for Llama, transformer.h for GPT-2)."""
    best: tuple[str, torch.nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) and (best is None or len(module) > len(best[1])):
            best = (name, module)
    if best is None:
        raise ConfigError(f"method.freeze: {type(model).__name__} has no list of transformer blocks",
                          hint="use method.freeze.train: [biases, norms] or another method")
    return best


def _is_norm(module: torch.nn.Module) -> bool:
    # Architectures define their own norm classes (LlamaRMSNorm, ...), so match by name as well as by type.
    return isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm)) or "norm" in type(module).__name__.lower()


class FreezeMethod(Method):
    name = "freeze"

    def selected_parameter_names(self, model) -> set[str]:
        options = self.config.freeze
        selected: set[str] = set()
        if options.train_last_n_blocks:
            prefix, blocks = transformer_blocks(model)
            if options.train_last_n_blocks > len(blocks):
                raise ConfigError(
                    f"method.freeze.train_last_n_blocks={options.train_last_n_blocks} but the model has "
                    f"{len(blocks)} blocks", hint=f"use a value from 1 to {len(blocks)}")
            for index in range(len(blocks) - options.train_last_n_blocks, len(blocks)):
                selected.update(f"{prefix}.{index}.{name}" for name, _ in blocks[index].named_parameters())
        if "biases" in options.train:
            selected.update(name for name, _ in model.named_parameters() if name.endswith(".bias"))
        if "norms" in options.train:
            for module_name, module in model.named_modules():
                if _is_norm(module):
                    selected.update(f"{module_name}.{name}" for name, _ in module.named_parameters(recurse=False))
        return selected

    def apply(self, model):
        selected = self.selected_parameter_names(model)
        if not selected:
            raise ConfigError(
                f"method.freeze selects no parameter of {type(model).__name__} (train: {self.config.freeze.train})",
                hint="this architecture may have no biases; add norms or train_last_n_blocks",
            )
        for name, param in model.named_parameters():
            param.requires_grad_(name in selected)
        return model

    def merged_model(self, model):
        return model
