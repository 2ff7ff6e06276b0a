"""LoRA (Hu et al. 2021) through PEFT, with the rsLoRA and DoRA variants as options of the same method.

Adapters are saved in PEFT format so peft, vLLM and others load them. `target` presets pick modules by structure
rather than by name, so `attention` works on architectures that do not call their projections q_proj/k_proj/...
"""
from __future__ import annotations

import torch

from tuneforge.errors import ConfigError
from tuneforge.methods.peft_method import PeftMethod, check_module_names, peft_task_type

_ATTENTION_MARKERS = ("attn", "attention")


def attention_module_names(model) -> list[str]:
    """Leaf names of the linear layers that sit inside an attention block (q_proj, k_proj, ... for Llama)."""
    from transformers.pytorch_utils import Conv1D

    names: list[str] = []
    for qualified, module in model.named_modules():
        parents = qualified.split(".")[:-1]
        if isinstance(module, (torch.nn.Linear, Conv1D)) and any(
            marker in part.lower() for part in parents for marker in _ATTENTION_MARKERS
        ):
            leaf = qualified.split(".")[-1]
            if leaf not in names:
                names.append(leaf)
    return names


class LoraMethod(PeftMethod):
    name = "lora"

    def target_modules(self, model) -> list[str] | str:
        options = self.config.lora
        if options.target == "all-linear":
            return "all-linear"  # PEFT's own preset: every linear layer except the output head
        if options.target == "attention":
            names = attention_module_names(model)
            if not names:
                raise ConfigError(
                    "method.lora.target=attention: no linear layer inside an attention block of "
                    f"{type(model).__name__}",
                    hint="name the modules explicitly with method.lora.target_modules",
                )
            return names
        check_module_names(model, options.target_modules, "method.lora.target_modules",
                           "q_proj, k_proj, v_proj, o_proj")
        return list(options.target_modules)

    def peft_config(self, model):
        from peft import LoraConfig

        options = self.config.lora
        return LoraConfig(
            r=options.r,
            lora_alpha=options.alpha,
            lora_dropout=options.dropout,
            target_modules=self.target_modules(model),
            use_rslora=options.use_rslora,
            use_dora=options.use_dora,
            task_type=peft_task_type(model),
        )
