"""Supervised fine-tuning on TRL's SFTTrainer, fed with examples we rendered and masked ourselves.

We tokenize and mask in `tuneforge.data.render` (the same code `data preview` shows), then hand TRL
`input_ids` + `assistant_masks`; TRL turns the mask into labels and batches. Padding is masked by
position in TRL's collator, so an end-of-turn token that doubles as the pad token is still trained.
"""
from __future__ import annotations

from pathlib import Path

from tuneforge.objectives.base import Objective, trainer_arguments, with_early_stopping


class SFTObjective(Objective):
    name = "sft"

    def training_arguments(self, run_cfg, output_dir: Path, *, has_eval: bool, world_size: int = 1) -> dict:
        """SFTConfig keyword arguments derived from the run config (kept separate so tests can inspect them)."""
        training = run_cfg.training
        args = trainer_arguments(run_cfg, output_dir, has_eval=has_eval, world_size=world_size)
        args.update(
            max_length=run_cfg.data.max_length,
            packing=training.batching == "packed",
            padding_free=training.batching == "packed",
            # A curriculum has put the rows in order already (tuneforge.train.curriculum): read them as they are.
            train_sampling_strategy=("sequential" if run_cfg.data.order == "curriculum"
                                     else "group_by_length" if training.batching == "length_grouped" else "random"),
            remove_unused_columns=True,
        )
        return args

    def prepare(self, run_cfg, tokenizer):
        from tuneforge.train.data_prep import prepare_data

        return prepare_data(run_cfg.data, tokenizer, max_test_items=run_cfg.eval.max_items)

    def build_trainer(self, run_cfg, model, tokenizer, prepared, output_dir: Path, callbacks):
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        from tuneforge.train.trl_trained_positions import TrainedPositionsSFTTrainer

        train_rows, eval_rows = prepared.rendered["train"], prepared.rendered.get("validation") or []
        has_eval = bool(eval_rows)
        args = SFTConfig(**self.training_arguments(run_cfg, output_dir, has_eval=has_eval))
        columns = ("input_ids", "assistant_masks")
        train_ds = Dataset.from_list([{k: r[k] for k in columns} for r in train_rows])
        eval_ds = Dataset.from_list([{k: r[k] for k in columns} for r in eval_rows]) if has_eval else None
        trainer_class = TrainedPositionsSFTTrainer if run_cfg.training.loss_at_trained_positions else SFTTrainer
        return trainer_class(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=tokenizer,
            callbacks=with_early_stopping(callbacks, run_cfg, has_eval),
        )
