"""Supervised fine-tuning on TRL's SFTTrainer, fed with examples we rendered and masked ourselves.

We tokenize and mask in `tuneforge.data.render` (the same code `data preview` shows), then hand TRL
`input_ids` + `assistant_masks`; TRL turns the mask into labels and batches. Padding is masked by
position in TRL's collator, so an end-of-turn token that doubles as the pad token is still trained.
"""
from __future__ import annotations

from pathlib import Path


class SFTObjective:
    name = "sft"

    def __init__(self, config):
        self.config = config

    def training_arguments(self, run_cfg, output_dir: Path, *, has_eval: bool, world_size: int = 1) -> dict:
        """SFTConfig keyword arguments derived from the run config (kept separate so tests can inspect them)."""
        import torch

        training = run_cfg.training
        on_gpu = torch.cuda.is_available()
        args = dict(
            # TRL defaults to bf16 mixed precision; the model's own dtype decides here (fp32 is right on CPU).
            bf16=on_gpu and run_cfg.model.dtype == "bfloat16",
            fp16=on_gpu and run_cfg.model.dtype == "float16",
            use_cpu=not on_gpu,
            output_dir=str(output_dir),
            num_train_epochs=training.epochs,
            max_steps=training.max_steps,
            learning_rate=run_cfg.effective_learning_rate(),
            per_device_train_batch_size=training.batch_size,
            per_device_eval_batch_size=training.batch_size,
            gradient_accumulation_steps=training.gradient_accumulation_steps,
            warmup_steps=training.warmup_ratio,  # transformers 5 reads a float < 1 as a ratio of total steps
            lr_scheduler_type=training.lr_scheduler,
            weight_decay=training.weight_decay,
            max_grad_norm=training.max_grad_norm,
            logging_steps=training.logging_steps,
            save_strategy="steps",
            save_steps=training.save_every_steps,
            save_total_limit=training.save_total_limit,
            eval_strategy="steps" if has_eval else "no",
            eval_steps=training.eval_every_steps if has_eval else None,
            seed=training.seed,
            data_seed=training.seed,
            report_to=[],
            disable_tqdm=True,
            dataloader_num_workers=0,
            max_length=run_cfg.data.max_length,
            packing=training.batching == "packed",
            padding_free=training.batching == "packed",
            train_sampling_strategy="group_by_length" if training.batching == "length_grouped" else "random",
            remove_unused_columns=True,
            ddp_find_unused_parameters=False if world_size > 1 else None,
        )
        if training.early_stopping_patience and has_eval:
            # The trainer can only restore the best weights from a checkpoint written at an evaluation step.
            args.update(
                save_steps=training.eval_every_steps,
                load_best_model_at_end=True,
                metric_for_best_model="eval_loss",
                greater_is_better=False,
            )
        return args

    def build_trainer(self, run_cfg, model, tokenizer, train_rows, eval_rows, output_dir: Path, callbacks):
        from datasets import Dataset
        from transformers import EarlyStoppingCallback
        from trl import SFTConfig, SFTTrainer

        has_eval = bool(eval_rows)
        args = SFTConfig(**self.training_arguments(run_cfg, output_dir, has_eval=has_eval))
        columns = ("input_ids", "assistant_masks")
        train_ds = Dataset.from_list([{k: r[k] for k in columns} for r in train_rows])
        eval_ds = Dataset.from_list([{k: r[k] for k in columns} for r in eval_rows]) if has_eval else None
        callbacks = list(callbacks)
        if run_cfg.training.early_stopping_patience and has_eval:
            callbacks.append(
                EarlyStoppingCallback(
                    early_stopping_patience=run_cfg.training.early_stopping_patience,
                    early_stopping_threshold=run_cfg.training.early_stopping_threshold,
                )
            )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=tokenizer,
            callbacks=callbacks,
        )
        return trainer
