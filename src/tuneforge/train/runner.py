"""The one training runner: config -> model + method + objective + data -> trained, evaluated, exported run.

    tuneforge train examples/quickstart.yaml training.max_steps=20

Steps, each leaving its artifact in the run directory before the next starts:
  1. resolve the config, write config.yaml and the first manifest (lineage so far);
  2. load tokenizer and data, prove the training template, render and mask every example;
  3. load the base model, apply the method (LoRA, full, ...), evaluate the untouched model (base);
  4. train with the objective's trainer (progress bar, metrics.jsonl, checkpoints, early stopping);
  5. evaluate the tuned model on the same items, compare with a paired bootstrap;
  6. export adapter + merged folder (merged logits checked against the adapter's), write report.html.
"""
from __future__ import annotations

import contextlib
import time

from rich.console import Console

from tuneforge.config.schema import RunConfig
from tuneforge.console import make_console
from tuneforge.runs.rundir import RunDir, now_iso, write_json_atomic


def seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)


class Runner:
    def __init__(self, cfg: RunConfig, *, config_path: str | None = None, console: Console | None = None,
                 resume: bool = False):
        self.cfg = cfg
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
        # New or resumed run dir; under torchrun only rank 0 writes into it (see tuneforge.train.launch).
        from tuneforge.train.launch import prepare_run_dir

        run, self.resume_checkpoint = prepare_run_dir(cfg, self.config_path, resume=self.resume, console=console)
        try:
            self._run(run)
        except BaseException as exc:
            run.update_manifest(status="failed", error=f"{type(exc).__name__}: {exc}", finished_at=now_iso(),
                                timings=self.timings)
            raise
        return run

    def _run(self, run: RunDir) -> None:
        from tuneforge.export.merge import merge_and_save, save_adapter, save_merged
        from tuneforge.integrations.quiet import drop_stdout_printer
        from tuneforge.integrations.trl_dtypes import trainable_dtypes_kept
        from tuneforge.methods import get_method
        from tuneforge.models.loading import context_window, load_tokenizer
        from tuneforge.models.sources import resolve_model
        from tuneforge.objectives import get_objective
        from tuneforge.report.html import write_report
        from tuneforge.train.callbacks import (
            MetricsCallback,
            RichProgressCallback,
            TokenCountingCollator,
            train_loss_summary,
        )
        from tuneforge.train.checkpoints import CheckpointMarkerCallback
        from tuneforge.train.data_prep import dataset_lineage
        from tuneforge.train.launch import is_main_process

        cfg, console = self.cfg, self.console

        started = time.perf_counter()
        resolved = resolve_model(cfg.model.source)
        tokenizer = load_tokenizer(resolved, cfg.model.chat_template_path)
        self._timed("resolve_model_s", started)
        run.update_manifest(base_model={
            "source": resolved.source, "kind": resolved.kind, "path": resolved.path,
            "weights_sha256": resolved.weights_sha256, "origin": resolved.origin,
        })

        started = time.perf_counter()
        # The objective owns its data: format, rendering, masks, held-out pairs/items (tuneforge.objectives).
        objective = get_objective(cfg.objective)
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
        window = context_window(model.config)
        if window and cfg.data.max_length > window:
            console.print(f"[yellow]data.max_length {cfg.data.max_length} exceeds the model's context window {window}")
        model = objective.prepare_model(model)  # e.g. reward: the backbone under a score head
        model = method.apply(model)
        objective.after_method(model)
        params = method.trainable_parameters(model)
        self._timed("load_model_s", started)
        console.print(f"[bold]method[/] {method.name}: {params['trainable']:,} trainable of {params['total']:,} "
                      f"parameters ({params['share']:.2%})")
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

        progress = RichProgressCallback(console=console)
        metrics_cb = MetricsCallback(run.metrics)
        with trainable_dtypes_kept(model):  # TRL's preference/RL trainers recast quantised models' adapters
            trainer = objective.build_trainer(
                cfg, model, tokenizer, prepared, run.checkpoints,
                [progress, metrics_cb, CheckpointMarkerCallback(run.checkpoints)],
            )
        drop_stdout_printer(trainer)
        # The dataloader is built lazily from trainer.data_collator, so swapping it here is enough. Online RL
        # batches are prompt lists, not token tensors: nothing to count there.
        counter = TokenCountingCollator(trainer.data_collator) if objective.counts_tokens else None
        if counter is not None:
            trainer.data_collator = counter
        progress.counter = metrics_cb.counter = counter

        started = time.perf_counter()
        trainer.train(
            resume_from_checkpoint=str(self.resume_checkpoint) if self.resume_checkpoint else None)
        self._timed("train_s", started)
        if not is_main_process():
            return  # evaluation, exports and the report are rank 0's
        model = objective.after_train(trainer.model)
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
            "tokens_per_second": counter.real_tokens / max(self.timings["train_s"], 1e-9) if counter else None,
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
        exports = {}
        if method.has_adapter and cfg.export.adapter:
            save_adapter(model, tokenizer, run.adapter)
            exports["adapter"] = str(run.adapter)
        if cfg.export.merged and not method.can_merge:
            exports["merged_skipped"] = (f"method {method.name} adds learned inputs, not weight deltas: there is "
                                         "nothing to merge; serve the adapter on the base model")
            console.print(f"[yellow]merged export skipped:[/] {exports['merged_skipped']}")
        elif cfg.export.merged:
            tokenizer_for_export = tokenizer
            if method.has_adapter:
                merged = merge_and_save(model, tokenizer_for_export, run.merged, lineage, merge=method.merged_model)
                exports["merged"] = merged["path"]
                exports["merged_max_abs_logit_diff_vs_adapter"] = merged["max_abs_logit_diff_vs_adapter"]
            else:
                save_merged(method.merged_model(model), tokenizer_for_export, run.merged, lineage)
                exports["merged"] = str(run.merged)
        self._timed("export_s", started)

        run.update_manifest(exports=exports, timings=self.timings, status="completed", finished_at=now_iso())
        write_report(run.path)
        if results and "comparison" in results:
            print_comparison(results, console)
        console.print(f"[bold]report[/] {run.report}")


def print_comparison(results: dict, console: Console) -> None:
    from rich.table import Table

    table = Table(title=f"base vs tuned on {results['n_items']} held-out items (95% paired bootstrap)")
    for column in ("metric", "base", "tuned", "delta", "95% CI", "p"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for metric in results["metrics"]:
        row = results["comparison"][metric]
        table.add_row(metric, f"{row['mean_a']:.3f}", f"{row['mean_b']:.3f}", f"{row['delta']:+.3f}",
                      f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]", f"{row['p_value']:.4f}")
    console.print(table)


def train_from_config(cfg: RunConfig, *, config_path: str | None = None, console: Console | None = None,
                      resume: bool = False) -> RunDir:
    return Runner(cfg, config_path=config_path, console=console, resume=resume).run()

