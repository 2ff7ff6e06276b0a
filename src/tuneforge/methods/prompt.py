"""Prompt tuning (Lester et al. 2021) through PEFT: learned input embeddings prepended to every sequence.

Outputs change at init (the soft prompt is attended to) and there is nothing to merge into the weights;
merged export is skipped and the PEFT adapter is the artifact.
"""
from __future__ import annotations

from tuneforge.methods.peft_method import PeftMethod, peft_task_type


class PromptTuningMethod(PeftMethod):
    name = "prompt"
    can_merge = False

    def peft_config(self, model):
        from peft import PromptTuningConfig, PromptTuningInit

        options = self.config.prompt
        # Sampled vocabulary embeddings start on the embedding manifold; random vectors may start far off it.
        init = PromptTuningInit.SAMPLE_VOCAB if options.init == "sample_vocab" else PromptTuningInit.RANDOM
        return PromptTuningConfig(
            num_virtual_tokens=options.num_virtual_tokens,
            prompt_tuning_init=init,
            task_type=peft_task_type(model),
        )
