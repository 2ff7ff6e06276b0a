"""The interface every objective implements, and what objectives share (trainer arguments, evaluation, results).

The runner asks an objective, in order:
  prepare(cfg, tokenizer)            -> PreparedData (the objective owns loading + rendering its data format)
  prepare_model(model)               -> model before the method wraps it (e.g. reward: add a score head)
  after_method(model)                -> after the method wrapped it (e.g. reward: make the new head trainable)
  evaluate(model, ..., label)        -> {"loss", "generation", "metrics"} for the base and the tuned model
  build_trainer(cfg, model, tokenizer, prepared, output_dir, callbacks) -> a (thinly wrapped) TRL trainer
  after_train(model)                 -> model ready for export (e.g. DPO: drop TRL's frozen "ref" adapter copy)
  results(cfg, prepared, base, tuned) -> the eval/results.json document
"""
from __future__ import annotations

from pathlib import Path

from tuneforge.eval.registry import METRIC_SETS


def trainer_arguments(run_cfg, output_dir: Path, *, has_eval: bool, world_size: int = 1) -> dict:
    """transformers.TrainingArguments keywords every TRL config accepts, derived from the run config."""
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
    )
    # Optimizer, gradient checkpointing and DDP/FSDP/DeepSpeed options: one mapping for every objective.
    from tuneforge.train.launch import scale_out_arguments, world_size as launched_world_size

    args.update(scale_out_arguments(training, world_size=max(world_size, launched_world_size())))
    if training.early_stopping_patience and has_eval:
        # The trainer can only restore the best weights from a checkpoint written at an evaluation step.
        args.update(save_steps=training.eval_every_steps, load_best_model_at_end=True,
                    metric_for_best_model="eval_loss", greater_is_better=False)
    return args


def with_early_stopping(callbacks, run_cfg, has_eval: bool) -> list:
    from transformers import EarlyStoppingCallback

    callbacks = list(callbacks)
    if run_cfg.training.early_stopping_patience and has_eval:
        callbacks.append(EarlyStoppingCallback(
            early_stopping_patience=run_cfg.training.early_stopping_patience,
            early_stopping_threshold=run_cfg.training.early_stopping_threshold,
        ))
    return callbacks


class Objective:
    name: str = ""
    #: Data format the objective reads when data.format is `auto` (None: chat / alpaca / prompt_completion).
    data_format: str | None = None
    #: Whether the trainer's batches are token tensors the runner's padding/token counter can read.
    counts_tokens: bool = True

    def __init__(self, config):
        self.config = config

    # ------------------------------------------------------------------ data and model

    def prepare(self, run_cfg, tokenizer):
        raise NotImplementedError

    def prepare_model(self, model):
        return model

    def after_method(self, model) -> None:
        return None

    def build_trainer(self, run_cfg, model, tokenizer, prepared, output_dir: Path, callbacks):
        raise NotImplementedError

    def after_train(self, model):
        return model

    # ------------------------------------------------------------------ evaluation

    def objective_metrics(self, model, tokenizer, prepared, run_cfg) -> dict:
        """Objective-specific held-out metrics (preference accuracy, reward accuracy, ...); {} when none."""
        return {}

    def evaluate(self, model, tokenizer, prepared, run_cfg, label: str, console) -> dict:
        """Validation loss on rendered rows, generation metrics on test items, and the objective's own metrics."""
        from tuneforge.eval.compare import evaluate_items
        from tuneforge.eval.loss import eval_loss

        out = {"loss": None, "generation": None, "metrics": {}}
        if prepared.rendered.get("validation"):
            out["loss"] = eval_loss(model, prepared.rendered["validation"], batch_size=run_cfg.training.batch_size)
            console.print(f"[bold]{label}[/] validation loss {out['loss']['loss']:.4f} "
                          f"(perplexity {out['loss']['perplexity']:.2f})")
        if prepared.items:
            gen = evaluate_items(model, tokenizer, prepared.items, metrics=METRIC_SETS[run_cfg.eval.metric],
                                 max_new_tokens=run_cfg.eval.max_new_tokens, batch_size=run_cfg.eval.batch_size,
                                 label=label)
            out["generation"] = gen
            shown = ", ".join(f"{k} {v:.3f}" for k, v in gen["summary"].items())
            console.print(f"[bold]{label}[/] {shown} on {len(prepared.items)} test items "
                          f"({gen['seconds']:.1f} s, {gen['items_per_second']:.2f} items/s)")
        out["metrics"] = self.objective_metrics(model, tokenizer, prepared, run_cfg)
        if out["metrics"]:
            console.print(f"[bold]{label}[/] " + ", ".join(
                f"{k} {v:.4f}" for k, v in out["metrics"].items() if isinstance(v, (int, float))))
        return out

    def results(self, run_cfg, prepared, base: dict | None, tuned: dict) -> dict | None:
        """The eval/results.json document; `base` is None when eval.compare_base is off."""
        from tuneforge.eval.compare import build_results, compare_results

        results = None
        if base and base["generation"] and tuned["generation"]:
            metrics = METRIC_SETS[run_cfg.eval.metric]
            comparison = compare_results(base["generation"], tuned["generation"], metrics=metrics,
                                         n_resamples=run_cfg.eval.bootstrap_samples, seed=run_cfg.training.seed)
            results = build_results(base["generation"], tuned["generation"], prepared.items, metrics=metrics,
                                    comparison=comparison, base_eval_loss=base["loss"], tuned_eval_loss=tuned["loss"])
        elif tuned["generation"] or tuned["loss"] or tuned["metrics"]:
            results = {"models": {"tuned": {"summary": (tuned["generation"] or {}).get("summary", {}),
                                            "eval_loss": tuned["loss"]}}}
            if base and (base["loss"] or base["metrics"]):
                results["models"]["base"] = {"summary": (base["generation"] or {}).get("summary", {}),
                                             "eval_loss": base["loss"]}
        if results is not None:
            for label, outcome in (("base", base), ("tuned", tuned)):
                if outcome and outcome["metrics"] and label in results["models"]:
                    results["models"][label]["objective_metrics"] = outcome["metrics"]
            results["objective"] = self.name
        return results
