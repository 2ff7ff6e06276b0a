"""LoRA (Hu et al. 2021) through PEFT; adapters are saved in PEFT format so peft, vLLM and others load them."""
from __future__ import annotations

from pathlib import Path

from tuneforge.methods.base import Method


class LoraMethod(Method):
    name = "lora"
    has_adapter = True

    def peft_config(self):
        from peft import LoraConfig, TaskType

        options = self.config.lora
        return LoraConfig(
            r=options.r,
            lora_alpha=options.alpha,
            lora_dropout=options.dropout,
            target_modules=list(options.target_modules),
            task_type=TaskType.CAUSAL_LM,
        )

    def apply(self, model):
        from peft import get_peft_model

        missing = [
            name for name in self.config.lora.target_modules
            if not any(module_name.split(".")[-1] == name for module_name, _ in model.named_modules())
        ]
        if missing:
            from tuneforge.errors import ConfigError

            raise ConfigError(
                f"method.lora.target_modules: {missing} not found in {type(model).__name__}",
                hint="use the module names of this architecture (e.g. q_proj, k_proj, v_proj, o_proj for Llama)",
            )
        return get_peft_model(model, self.peft_config())

    def save_adapter(self, model, path: Path) -> bool:
        model.save_pretrained(path)
        return True

    def merged_model(self, model):
        # merge_and_unload folds B@A*scale into the base weights and returns the plain transformers model;
        # the PEFT wrapper is unusable afterwards, so callers save the adapter first.
        return model.merge_and_unload()

    def base_context(self, model):
        return model.disable_adapter()
