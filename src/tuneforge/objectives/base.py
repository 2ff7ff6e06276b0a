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


def trainer_arguments(run_cfg, output_dir: Path, *, has_eval: bool, world_size: int = 1) -> dict:
    """transformers.TrainingArguments keywords every TRL config accepts, derived from the run config."""
    import torch

    training = run_cfg.training
    on_gpu = torch.cuda.is_available()
    args = dict(
        # TRL defaults to bf16 mixed precision; here the model's dtype or training.mixed_precision decides.
        bf16=(on_gpu and run_cfg.model.dtype == "bfloat16") or training.mixed_precision == "bf16",
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
        disable_tqdm=True,
        dataloader_num_workers=0,
        # Read by the SFT trainer's token loss (TRL's label smoother path) and by Trainer.train (NEFTune's
        # embedding hook); the config refuses both for objectives whose trainers compute their own loss.
        label_smoothing_factor=training.label_smoothing,
        neftune_noise_alpha=training.neftune_noise_alpha,
    )
    # Optimizer, gradient checkpointing and DDP/FSDP/DeepSpeed options: one mapping for every objective.
    from tuneforge.integrations.tracking import trainer_reporting
    from tuneforge.train.launch import scale_out_arguments
    from tuneforge.train.launch import world_size as launched_world_size

    args.update(scale_out_arguments(training, world_size=max(world_size, launched_world_size())))
    # output_dir is <run>/checkpoints: tracker runs take the tuneforge run's name.
    args.update(trainer_reporting(training.report_to, run_cfg.output.name or Path(output_dir).parent.name))
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
    #: Methods this objective cannot train correctly, with the reason (checked when the config is read, so a
    #: refused pair fails at `config validate` instead of mid-run). The method x objective matrix test holds it.
    refused_methods: dict[str, str] = {}
    #: The run directory, set by the runner before `prepare` (None outside a run, e.g. in tests).
    run_dir: Path | None = None

    def __init__(self, config):
        self.config = config

    # ------------------------------------------------------------------ data and model

    def plan_data(self, run_cfg, tokenizer):
        """(prepared data, how its lengths were obtained or None) for `tuneforge plan`: `prepare` unless an
        objective would have to run a model first."""
        return self.prepare(run_cfg, tokenizer), None

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
        """Validation loss on rendered rows, the eval pipeline on test items, and the objective's own metrics.

        The test items go through exactly what `tuneforge eval` runs (`tuneforge.eval.pipeline.evaluate_side`
        with the inference engine around the model being trained), so a run's results are an eval's results.
        """
        from tuneforge.eval.loss import eval_loss
        from tuneforge.eval.pipeline import evaluate_side
        from tuneforge.models.inference import InferenceEngine

        out = {"validation_loss": None, "side": None, "metrics": {}}
        if prepared.rendered.get("validation"):
            loss = eval_loss(model, prepared.rendered["validation"], batch_size=run_cfg.training.batch_size)
            out["validation_loss"] = {**loss, "split": "validation"}
            console.print(f"[bold]{label}[/] validation loss {loss['loss']:.4f} (perplexity {loss['perplexity']:.2f})")
        if prepared.items:
            engine = InferenceEngine(model, tokenizer, name=label)
            engine.batch_tokens = run_cfg.eval.batch_tokens
            side = evaluate_side(engine, label, prepared.items,
                                 metrics=eval_metrics(run_cfg, prepared.items),
                                 max_new_tokens=run_cfg.eval.max_new_tokens, batch_size=run_cfg.eval.batch_size)
            out["side"] = side
            shown = ", ".join(f"{k} {v:.3f}" for k, v in side["summary"].items())
            console.print(f"[bold]{label}[/] {shown} on {len(prepared.items)} test items "
                          f"({side['task_seconds']:.1f} s, {side['items_per_second']:.2f} items/s)")
        out["metrics"] = self.objective_metrics(model, tokenizer, prepared, run_cfg)
        if out["metrics"]:
            console.print(f"[bold]{label}[/] " + ", ".join(
                f"{k} {v:.4f}" for k, v in out["metrics"].items() if isinstance(v, (int, float))))
        return out

    def results(self, run_cfg, prepared, base: dict | None, tuned: dict) -> dict | None:
        """The eval/results.json document, in the eval pipeline's layout; `base` is None without compare_base."""
        from tuneforge.eval import registry
        from tuneforge.eval.pipeline import assemble_results, compare_sides

        sides = {}
        for label, outcome in (("tuned", tuned), ("base", base)):
            if outcome is None or not (outcome["side"] or outcome["validation_loss"] or outcome["metrics"]):
                continue
            side = outcome["side"] or {"source": label, "summary": {}, "slices": {}, "per_item": [],
                                       "label_report": None, "notes": []}
            loss = outcome["validation_loss"]
            if loss:
                side["validation_loss"] = loss
                side["summary"].update(validation_loss=loss["loss"], validation_perplexity=loss["perplexity"])
            if outcome["metrics"]:
                side["objective_metrics"] = outcome["metrics"]
                side["summary"].update({k: v for k, v in outcome["metrics"].items() if k in registry.REGISTRY})
            sides[label] = side
        if "tuned" not in sides:
            return None
        metrics = eval_metrics(run_cfg, prepared.items) if prepared.items else []
        comparison = {}
        if "base" in sides and prepared.items:
            comparison = compare_sides(sides["base"], sides["tuned"], metrics, seed=run_cfg.training.seed,
                                       n_resamples=run_cfg.eval.bootstrap_samples, items=prepared.items)
        sources = {"tuned": "the trained model", "base": run_cfg.model.source if "base" in sides else None,
                   "data": run_cfg.data.test}
        return assemble_results(Path(run_cfg.data.test).stem if run_cfg.data.test else self.name, metrics,
                                prepared.items, sides, comparison, [], sources, objective=self.name)


def eval_metrics(run_cfg, items: list[dict]) -> list[str]:
    """The metrics a run scores its test items with: `eval.metrics`, else chosen from the references' shape."""
    from tuneforge.eval import registry

    if run_cfg.eval.metrics:
        return registry.expand(run_cfg.eval.metrics)
    return registry.default_metrics([item["reference"] for item in items])
