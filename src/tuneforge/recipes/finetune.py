"""The fine-tuning recipe: config -> model + method + objective + data -> trained, evaluated, exported run.

    tuneforge train examples/lora-contact-extraction.yaml training.max_steps=20

Steps, each leaving its artifact in the run directory before the next starts:
  1. resolve the config, write config.yaml and the first manifest (lineage so far);
  2. load tokenizer and data, prove the training template, render and mask every example (with data.order
     curriculum, put in easy -> hard order after the base is loaded: RUN/data_order.json);
  3. load the base model, apply the method (LoRA, full, ...), evaluate the untouched model (base);
  4. train with the objective's trainer (progress bar, metrics.jsonl, checkpoints, early stopping);
  5. evaluate the tuned model on the same items through the eval pipeline (`tuneforge eval`'s), compare with a
     paired bootstrap, write eval/results.json in the one results layout;
  6. export adapter + merged folder (merged logits checked against the adapter's), write report.html.
"""
from __future__ import annotations

import contextlib
import time

from rich.console import Console

from tuneforge.atomic import write_json_atomic
from tuneforge.config.schema import RunConfig
from tuneforge.console import make_console
from tuneforge.runs.rundir import RunDir, now_iso


def precision_line(cfg: RunConfig) -> str:
    """What the weights are held in and what the matmuls compute in, and whether this device does bf16 natively."""
    from tuneforge.integrations.bf16 import native_bf16

    autocast = "bf16 autocast" if cfg.training.mixed_precision == "bf16" else "no autocast"
    held = ("; the frozen base held in bfloat16 while training" if cfg.training.frozen_base_dtype == "bfloat16"
            else "")
    return f"[bold]precision[/] weights {cfg.model.dtype}{held}, {autocast} ({native_bf16()[1]})"


def seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)


class Runner:
    def __init__(self, cfg: RunConfig, *, config_path: str | None = None, console: Console | None = None,
                 resume: bool = False, callbacks: list | None = None):
        self.cfg = cfg
        self.extra_callbacks = list(callbacks or [])  # e.g. a sweep's pruning callback (tuneforge.sweep)
        self.config_path = config_path
        self.resume = resume  # continue the existing run dir from its newest trusted checkpoint
        self.console = console or make_console()
        self.timings: dict[str, float] = {}

    def _timed(self, key: str, started: float) -> None:
        self.timings[key] = round(time.perf_counter() - started, 2)

    def run(self) -> RunDir:
        import torch

        from tuneforge.integrations.quiet import quiet_third_party_output

        cfg, console = self.cfg, self.console
        quiet_third_party_output()
        if cfg.training.num_threads:
            torch.set_num_threads(cfg.training.num_threads)
        seed_everything(cfg.training.seed)
        from tuneforge.objectives import check_method_allowed

        check_method_allowed(cfg)  # before a run directory exists
        from tuneforge.errors import TuneforgeError
        from tuneforge.plan.build import check_before_training

        try:
            base_ref = base_model_ref(cfg.model.source, cfg.output.dir)
        except TuneforgeError:
            base_ref = None  # the run itself reports a bad model (in its run directory); the plan just says unavailable
        # Prints the plan; refuses a run that cannot fit, before any weight loads.
        check_before_training(cfg, console, base_ref)
        # New or resumed run dir; under torchrun only rank 0 writes into it (see tuneforge.train.launch).
        from tuneforge.train.launch import prepare_run_dir, supervised_run

        run, self.resume_checkpoint = prepare_run_dir(cfg, self.config_path, resume=self.resume, console=console)
        with supervised_run(run, self.timings):  # records failed / interrupted (Ctrl-C, SIGTERM); heartbeat
            self._run(run)
        return run

    def _run(self, run: RunDir) -> None:
        import torch

        from tuneforge.eval.pipeline import print_summary
        from tuneforge.integrations.quiet import drop_stdout_printer
        from tuneforge.integrations.trl_dtypes import trainable_dtypes_kept
        from tuneforge.methods import get_method
        from tuneforge.models.loading import check_context_window, load_tokenizer
        from tuneforge.models.sources import resolve_model
        from tuneforge.objectives import get_objective
        from tuneforge.recipes.export import export_trained
        from tuneforge.report.html import write_report
        from tuneforge.train.callbacks import (
            MetricsCallback,
            RichProgressCallback,
            count_training_tokens,
            train_loss_summary,
        )
        from tuneforge.train.checkpoints import CheckpointMarkerCallback
        from tuneforge.train.data_prep import dataset_lineage
        from tuneforge.train.frozen_dtype import cast_frozen
        from tuneforge.train.launch import is_main_process

        cfg, console = self.cfg, self.console

        started = time.perf_counter()
        resolved = resolve_model(base_model_ref(cfg.model.source, cfg.output.dir).model_path)
        tokenizer = load_tokenizer(resolved, cfg.model.chat_template_path)
        self._timed("resolve_model_s", started)
        run.update_manifest(base_model={
            "source": resolved.source, "kind": resolved.kind, "path": resolved.path,
            "weights_sha256": resolved.weights_sha256, "origin": resolved.origin,
        })

        started = time.perf_counter()
        # The objective owns its data: format, rendering, masks, held-out pairs/items (tuneforge.objectives).
        objective = get_objective(cfg.objective)
        objective.run_dir = run.path  # where an objective caches what it derives (distill: the teacher's answers)
        prepared = objective.prepare(cfg, tokenizer)
        self._timed("prepare_data_s", started)
        run.update_manifest(
            datasets=dataset_lineage(prepared.splits),
            render_stats=prepared.stats,
            training_template={"derived": getattr(prepared.template, "derived", None),
                               "verified_rows": getattr(prepared.template, "verified_rows", None),
                               "strategy": getattr(prepared.template, "strategy", None)},
        )
        train_stats = prepared.stats["train"]
        console.print(
            f"[bold]data[/] {train_stats['examples']} train examples, {train_stats['tokens']} tokens, "
            f"{train_stats['trained_share']:.1%} trained, {train_stats['truncated']} truncated"
            + (f"; training template derived and proven byte-identical on {prepared.template.verified_rows} rows"
               if prepared.template is not None and prepared.template.derived else "")
        )

        started = time.perf_counter()
        method = get_method(cfg.method)
        # The method loads its base: most call load_model, QLoRA loads the weights quantised to 4-bit.
        model = method.load_base(resolved, cfg.model.dtype)
        check_context_window(cfg.data, model.config, cfg.model.source)
        model = objective.prepare_model(model)  # e.g. reward: the backbone under a score head
        model = method.apply(model)
        objective.after_method(model)
        params = method.trainable_parameters(model)
        self._timed("load_model_s", started)
        console.print(f"[bold]method[/] {method.name}: {params['trainable']:,} trainable of {params['total']:,} "
                      f"parameters ({params['share']:.2%})")
        console.print(precision_line(cfg), highlight=False)
        run.update_manifest(method={"name": method.name, "parameters": params})

        # The base is evaluated before training, through the very model object that will be trained: LoRA
        # starts as an exact identity (B = 0), and full fine-tuning has not changed a weight yet. Adapter methods
        # are switched off for it, since prefix/prompt tuning change outputs from the first step.
        started = time.perf_counter()
        base_eval = None
        if cfg.eval.compare_base and is_main_process():
            with method.base_context(model) if method.has_adapter else contextlib.nullcontext():
                base_eval = objective.evaluate(model, tokenizer, prepared, cfg, "base", console)
        self._timed("eval_base_s", started)

        if cfg.data.order == "curriculum":
            from tuneforge.train.curriculum import apply_curriculum

            # Scored by the untouched base (adapters off), before the trainer exists.
            started = time.perf_counter()
            with method.base_context(model) if method.has_adapter else contextlib.nullcontext():
                order = apply_curriculum(run.path, cfg.data, prepared, model, batch_size=cfg.training.batch_size,
                                         write=is_main_process(), console=console)
            self._timed("curriculum_s", started)
            if is_main_process():
                run.update_manifest(data_order=order)

        if cfg.training.frozen_base_dtype == "bfloat16":
            cast_frozen(model, torch.bfloat16)  # back to model.dtype after training (train/frozen_dtype.py)
        progress = RichProgressCallback(console=console)
        metrics_cb = MetricsCallback(run.metrics)
        with trainable_dtypes_kept(model):  # TRL's preference/RL trainers recast quantised models' adapters
            trainer = objective.build_trainer(
                cfg, model, tokenizer, prepared, run.checkpoints,
                [progress, metrics_cb, CheckpointMarkerCallback(run.checkpoints), *self.extra_callbacks],
            )
        drop_stdout_printer(trainer)
        from tuneforge.train.regularization import build_penalty, install_penalty

        penalty = build_penalty(cfg, model, tokenizer, console)  # theta0 = the weights before any step
        if penalty is not None:
            install_penalty(trainer, penalty)
        # Only trained micro-batches count (not eval or prefetched ones). Online RL batches are prompt lists.
        counter = count_training_tokens(trainer) if objective.counts_tokens else None
        progress.counter = metrics_cb.counter = counter

        started = time.perf_counter()
        trainer.train(
            resume_from_checkpoint=str(self.resume_checkpoint) if self.resume_checkpoint else None)
        self._timed("train_s", started)
        if not is_main_process():
            return  # evaluation, exports and the report are rank 0's
        # Under mixed precision accelerate wraps the model's forward in autocast and leaves it wrapped after train():
        # the tuned model is evaluated (like the base was, before training) and merged without it, else the merge
        # check compares autocast logits with the merged model's plain ones.
        model = objective.after_train(trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False))
        if cfg.training.frozen_base_dtype == "bfloat16":
            cast_frozen(model, getattr(torch, cfg.model.dtype))
        losses = train_loss_summary(run.metrics)
        console.print(
            f"[bold]trained[/] {trainer.state.global_step} steps in {self.timings['train_s']:.1f} s"
            + (f"; train loss {losses['final_train_loss']:.4f} at the end, {losses['train_loss']:.4f} on average"
               if losses["train_loss"] is not None else "")
            + (f"; padding share {counter.padding_share:.1%}" if counter else "")
        )
        run.update_manifest(training={
            "objective": objective.name,
            "steps": trainer.state.global_step,
            **losses,
            "padding_share": counter.padding_share if counter else None,
            "real_tokens": counter.real_tokens if counter else None,
            "trained_tokens": counter.trained_tokens if counter else None,
            # Over the time spent training: timings.train_s also holds the evaluations and checkpoint saves.
            "training_s": round(counter.clock.training_seconds(), 3) if counter else None,
            "tokens_per_second": counter.tokens_per_second if counter else None,
            "learning_rate": cfg.effective_learning_rate(),
            "best_checkpoint": trainer.state.best_model_checkpoint,
            "stopped_early": trainer.state.global_step < trainer.state.max_steps,
        })

        started = time.perf_counter()
        tuned_eval = objective.evaluate(model, tokenizer, prepared, cfg, "tuned", console)
        self._timed("eval_tuned_s", started)

        results = objective.results(cfg, prepared, base_eval, tuned_eval)
        if results is not None:
            write_json_atomic(run.eval_dir / "results.json", results)

        started = time.perf_counter()
        lineage = {"run": run.name, "base_model": resolved.source, "base_weights_sha256": resolved.weights_sha256}
        exports = export_trained(method, model, tokenizer, adapter_dir=run.adapter if cfg.export.adapter else None,
                                 merged_dir=run.merged if cfg.export.merged else None, lineage=lineage,
                                 console=console)
        if cfg.export.gguf and exports.get("merged"):
            from tuneforge.recipes.export import (
                GGUF_DIR,
                export_gguf,
                provenance,
                verification_items,
            )

            exports["gguf"] = export_gguf(run.merged, run.path / GGUF_DIR, cfg.export.gguf,
                                          provenance=provenance(run, cfg), items=verification_items(cfg),
                                          console=console)
        self._timed("export_s", started)

        from tuneforge.recipes.export import record_exports

        record_exports(run, exports, card=cfg.export.card)
        run.update_manifest(timings=self.timings, status="completed", finished_at=now_iso())
        write_report(run.path)
        if results:
            print_summary(results, console)
        console.print(f"[bold]report[/] {run.report}")


def base_model_ref(source: str, runs_dir):
    """The model a run starts from, as a ModelRef; training starts from full weights (a catalog model, a folder,
    a .gguf, a hub id, or a finished run's merged model), never from an endpoint or an adapter without a merge."""
    from tuneforge.errors import ConfigError
    from tuneforge.models.ref import parse_model_ref
    from tuneforge.registry.release import resolve_model_ref

    ref = resolve_model_ref(parse_model_ref(source, runs_dir=runs_dir), runs_dir=runs_dir)
    if not ref.is_local or ref.adapter_path:
        raise ConfigError(f"model.source: {source!r} is a {ref.kind} reference; training needs full weights",
                          hint="export the run first (`tuneforge export RUN`) and train from its merged folder, "
                               "or pass a catalog name, a model folder, a .gguf file or a hub id")
    return ref


def train_from_config(cfg: RunConfig, *, config_path: str | None = None, console: Console | None = None,
                      resume: bool = False, callbacks: list | None = None) -> RunDir:
    return Runner(cfg, config_path=config_path, console=console, resume=resume, callbacks=callbacks).run()

