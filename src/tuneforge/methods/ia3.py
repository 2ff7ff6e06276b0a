"""IA3 (Liu et al. 2022) through PEFT: learned per-channel scales on a few activations, initialised to ones.

With ones the model is exactly the base at init; the scales fold into the weights on merge.
"""
from __future__ import annotations

from tuneforge.methods.peft_method import PeftMethod, check_module_names, peft_task_type


class IA3Method(PeftMethod):
    name = "ia3"

    def peft_config(self, model):
        from peft import IA3Config

        options = self.config.ia3
        if options.target_modules is not None:
            check_module_names(model, options.target_modules, "method.ia3.target_modules", "k_proj, v_proj, down_proj")
        feedforward = options.feedforward_modules
        if feedforward is not None and options.target_modules is not None:
            stray = [name for name in feedforward if name not in options.target_modules]
            if stray:
                from tuneforge.errors import ConfigError

                raise ConfigError(f"method.ia3.feedforward_modules: {stray} are not in target_modules",
                                  hint="feedforward_modules must be a subset of target_modules")
        # None lets PEFT pick its per-architecture defaults for both lists.
        return IA3Config(
            target_modules=options.target_modules,
            feedforward_modules=feedforward,
            init_ia3_weights=True,
            task_type=peft_task_type(model),
        )
