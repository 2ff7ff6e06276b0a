"""Continued pretraining on raw text: documents joined with EOS, cut into data.max_length blocks, loss on every token.

Blocks are standard causal windows (GPT-style): attention crosses the EOS between two documents inside a block.
That is deliberate and cheap; `training.batching` does not apply because blocks are already full (no padding),
so the SFT trainer is given `padded` batching whatever the config says.
"""
from __future__ import annotations

from tuneforge.objectives.sft import SFTObjective


class CPTObjective(SFTObjective):
    name = "cpt"
    data_format = "text"

    def training_arguments(self, run_cfg, output_dir, *, has_eval, world_size=1):
        args = super().training_arguments(run_cfg, output_dir, has_eval=has_eval, world_size=world_size)
        args.update(packing=False, padding_free=False, train_sampling_strategy="random")
        return args

    def prepare(self, run_cfg, tokenizer):
        from tuneforge.train.data_prep import PreparedData, load_splits, pack_text

        splits = load_splits(run_cfg.data, self.data_format)
        rendered, stats = {}, {}
        for name in ("train", "validation"):
            if name in splits:
                rendered[name], stats[name] = pack_text(splits[name].rows, tokenizer, run_cfg.data.max_length)
        # No generation eval: raw text has no prompt/reference pairs; held-out perplexity is the metric.
        return PreparedData(splits=splits, rendered=rendered, stats=stats, template=None, items=[])
