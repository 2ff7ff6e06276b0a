"""Prefix tuning (Li & Liang 2021) through PEFT: learned key/value vectors prepended in every attention layer.

The prefix is attended to from the first step, so outputs change at init; there is no weight delta to merge,
so merged export is skipped (the runner records why in the manifest) and the adapter is the artifact.
"""
from __future__ import annotations

from tuneforge.methods.peft_method import PeftMethod, peft_task_type


class PrefixTuningMethod(PeftMethod):
    name = "prefix"
    can_merge = False

    def peft_config(self, model):
        from peft import PrefixTuningConfig

        options = self.config.prefix
        return PrefixTuningConfig(
            num_virtual_tokens=options.num_virtual_tokens,
            prefix_projection=options.projection,
            encoder_hidden_size=model.config.hidden_size,
            task_type=peft_task_type(model),
        )
