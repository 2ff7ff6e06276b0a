"""Online RL with TRL's GRPOTrainer or RLOOTrainer against programmatic rewards or a reward model.

Prompts come from chat / prompt_completion rows (the last assistant turn becomes the `reference` column that
rewards may read) or preference rows (chosen is the reference). TRL samples `num_generations` completions per
prompt; with a PEFT model and beta > 0 the reference log-probs come from the adapter-disabled model (no copy).
Rewards are logged per step (`reward`, `rewards/<name>/mean`) and so reach metrics.jsonl. The base-vs-tuned
generation eval applies when a test file is given, exactly as for SFT.
"""
from __future__ import annotations

from tuneforge.objectives.base import Objective, trainer_arguments


class RLObjective(Objective):
    name = "rl"
    counts_tokens = False  # GRPO/RLOO batches are lists of prompts, not token tensors

    def prepare(self, run_cfg, tokenizer):
        from tuneforge.data.render_preference import prompt_of, reference_of
        from tuneforge.train.data_prep import PreparedData, load_splits, prepare_data

        splits = load_splits(run_cfg.data)
        if splits["train"].format in ("preference", "kto", "text"):
            if splits["train"].format == "text":
                from tuneforge.errors import DataError

                raise DataError(f"{splits['train'].path}: objective rl needs prompts; raw text has none")
            prepared = PreparedData(splits=splits, rendered={}, stats={}, template=None, items=[])
        else:
            prepared = prepare_data(run_cfg.data, tokenizer, max_test_items=run_cfg.eval.max_items, splits=splits)
        prompts = [{"prompt": prompt_of(r), "reference": reference_of(r)} for r in splits["train"].rows]
        if any(p["reference"] is None for p in prompts):
            prompts = [{"prompt": p["prompt"]} for p in prompts]
        prepared.train_dataset = prompts
        prepared.stats.setdefault("train", {"examples": len(prompts), "tokens": 0, "trained_share": 0.0,
                                            "truncated": 0})
        return prepared

    def training_arguments(self, run_cfg, output_dir) -> dict:
        options = self.config.rl
        args = trainer_arguments(run_cfg, output_dir, has_eval=False)
        # Each optimizer step scores whole groups: the batch must hold a multiple of num_generations completions.
        group = options.num_generations
        batch = max(group, -(-run_cfg.training.batch_size // group) * group)
        args.update(per_device_train_batch_size=batch, per_device_eval_batch_size=batch,
                    num_generations=group, max_completion_length=options.max_completion_length,
                    temperature=options.temperature, beta=options.beta, log_completions=False)
        return args

    def build_trainer(self, run_cfg, model, tokenizer, prepared, output_dir, callbacks):
        from datasets import Dataset

        from tuneforge.objectives.rewards import resolve_reward

        if self.config.rl.algorithm == "grpo":
            from trl import GRPOConfig as Config
            from trl import GRPOTrainer as Trainer
        else:
            from trl import RLOOConfig as Config
            from trl import RLOOTrainer as Trainer
        rewards = [resolve_reward(spec) for spec in self.config.rl.reward]
        return Trainer(model=model, reward_funcs=rewards, args=Config(**self.training_arguments(run_cfg, output_dir)),
                       train_dataset=Dataset.from_list(prepared.train_dataset), processing_class=tokenizer,
                       callbacks=list(callbacks))
