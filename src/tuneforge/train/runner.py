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

import json
import time
from pathlib import Path

from rich.console import Console

from tuneforge.config.loader import dump_config
from tuneforge.config.schema import RunConfig
from tuneforge.runs.rundir import (
    RunDir,
    base_manifest,
    create_run_dir,
    default_run_name,
    now_iso,
    write_json_atomic,
    write_text_atomic,
)

METRIC_SETS = {"exact_match": ["exact_match"], "json_fields": ["json_fields"], "both": ["json_fields", "exact_match"]}


def seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)


def _evaluate(model, tokenizer, prepared, cfg: RunConfig, label: str, console: Console) -> tuple[dict | None, dict | None]:
    from tuneforge.eval.compare import evaluate_items
    from tuneforge.eval.loss import eval_loss

    loss = None
    if "validation" in prepared.rendered:
        loss = eval_loss(model, prepared.rendered["validation"], batch_size=cfg.training.batch_size)
        console.print(f"[bold]{label}[/] validation loss {loss['loss']:.4f} (perplexity {loss['perplexity']:.2f})")
    generation = None
    if prepared.items:
        generation = evaluate_items(
            model, tokenizer, prepared.items,
            metrics=METRIC_SETS[cfg.eval.metric],
            max_new_tokens=cfg.eval.max_new_tokens,
            batch_size=cfg.eval.batch_size,
            label=label,
        )
        shown = ", ".join(f"{k} {v:.3f}" for k, v in generation["summary"].items())
        console.print(f"[bold]{label}[/] {shown} on {len(prepared.items)} test items "
                      f"({generation['seconds']:.1f} s, {generation['items_per_second']:.2f} items/s)")
    return loss, generation


class Runner:
    def __init__(self, cfg: RunConfig, *, config_path: str | None = None, console: Console | None = None):
        self.cfg = cfg
        self.config_path = config_path
        self.console = console or Console(stderr=True)
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
        run = create_run_dir(cfg.output.dir, cfg.output.name or default_run_name(self.config_path),
                             overwrite=cfg.output.overwrite)
        write_text_atomic(run.config, dump_config(cfg))
        write_json_atomic(run.manifest, base_manifest(run, seed=cfg.training.seed, config_path=self.config_path))
        console.print(f"[bold]run[/] {run.path}")
        try:
            self._run(run)
        except BaseException as exc:
            run.update_manifest(status="failed", error=f"{type(exc).__name__}: {exc}", finished_at=now_iso(),
                                timings=self.timings)
            raise
        return run

    def _run(self, run: RunDir) -> None:
        from tuneforge.eval.compare import build_results, compare_results
        from tuneforge.integrations.quiet import drop_stdout_printer
        from tuneforge.export.merge import merge_and_save, save_adapter, save_merged
        from tuneforge.methods import get_method, trainable_parameter_report
        from tuneforge.models.loading import context_window, load_model, load_tokenizer
        from tuneforge.models.sources import resolve_model
        from tuneforge.objectives import get_objective
        from tuneforge.report.html import write_report
        from tuneforge.train.callbacks import MetricsCallback, RichProgressCallback, TokenCountingCollator
        from tuneforge.train.data_prep import dataset_lineage, prepare_data

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
        prepared = prepare_data(cfg.data, tokenizer, max_test_items=cfg.eval.max_items)
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
        model = load_model(resolved, cfg.model.dtype)
        window = context_window(model.config)
        if window and cfg.data.max_length > window:
            console.print(f"[yellow]data.max_length {cfg.data.max_length} exceeds the model's context window {window}")
        method = get_method(cfg.method)
        model = method.apply(model)
        params = trainable_parameter_report(model)
        self._timed("load_model_s", started)
        console.print(f"[bold]method[/] {method.name}: {params['trainable']:,} trainable of {params['total']:,} "
                      f"parameters ({params['share']:.2%})")
        run.update_manifest(method={"name": method.name, "parameters": params})

        # The base is evaluated before training, through the very model object that will be trained: LoRA
        # starts as an exact identity (B = 0), and full fine-tuning has not changed a weight yet.
        started = time.perf_counter()
        base_loss, base_generation = (None, None)
        if cfg.eval.compare_base:
            base_loss, base_generation = _evaluate(model, tokenizer, prepared, cfg, "base", console)
        self._timed("eval_base_s", started)

        objective = get_objective(cfg.objective)
        progress = RichProgressCallback(console=console)
        metrics_cb = MetricsCallback(run.metrics)
        trainer = objective.build_trainer(
            cfg, model, tokenizer, prepared.rendered["train"], prepared.rendered.get("validation", []),
            run.checkpoints, [progress, metrics_cb],
        )
        drop_stdout_printer(trainer)
        counter = TokenCountingCollator(trainer.data_collator)
        trainer.data_collator = counter
        # The dataloader is built lazily from trainer.data_collator, so swapping it here is enough.
        progress.counter = metrics_cb.counter = counter

        started = time.perf_counter()
        train_output = trainer.train()
        self._timed("train_s", started)
        model = trainer.model
        console.print(
            f"[bold]trained[/] {trainer.state.global_step} steps in {self.timings['train_s']:.1f} s; "
            f"final train loss {train_output.training_loss:.4f}; padding share {counter.padding_share:.1%}"
        )
        run.update_manifest(training={
            "steps": trainer.state.global_step,
            "train_loss": train_output.training_loss,
            "padding_share": counter.padding_share,
            "real_tokens": counter.real_tokens,
            "trained_tokens": counter.trained_tokens,
            "tokens_per_second": counter.real_tokens / max(self.timings["train_s"], 1e-9),
            "learning_rate": cfg.effective_learning_rate(),
            "best_checkpoint": trainer.state.best_model_checkpoint,
            "stopped_early": trainer.state.global_step < trainer.state.max_steps,
        })

        started = time.perf_counter()
        tuned_loss, tuned_generation = _evaluate(model, tokenizer, prepared, cfg, "tuned", console)
        self._timed("eval_tuned_s", started)

        results = None
        if base_generation and tuned_generation:
            metrics = METRIC_SETS[cfg.eval.metric]
            comparison = compare_results(base_generation, tuned_generation, metrics=metrics,
                                         n_resamples=cfg.eval.bootstrap_samples, seed=cfg.training.seed)
            results = build_results(base_generation, tuned_generation, prepared.items, metrics=metrics,
                                    comparison=comparison, base_eval_loss=base_loss, tuned_eval_loss=tuned_loss)
        elif tuned_generation or tuned_loss:
            results = {"models": {"tuned": {"summary": (tuned_generation or {}).get("summary", {}),
                                             "eval_loss": tuned_loss}}}
        if results is not None:
            write_json_atomic(run.eval_dir / "results.json", results)

        started = time.perf_counter()
        lineage = {"run": run.name, "base_model": resolved.source, "base_weights_sha256": resolved.weights_sha256}
        exports = {}
        if method.has_adapter and cfg.export.adapter:
            save_adapter(model, tokenizer, run.adapter)
            exports["adapter"] = str(run.adapter)
        if cfg.export.merged:
            tokenizer_for_export = tokenizer
            if method.has_adapter:
                merged = merge_and_save(model, tokenizer_for_export, run.merged, lineage)
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


def train_from_config(cfg: RunConfig, *, config_path: str | None = None, console: Console | None = None) -> RunDir:
    return Runner(cfg, config_path=config_path, console=console).run()


def results_of(run: RunDir) -> dict:
    path = run.eval_dir / "results.json"
    return json.loads(path.read_text()) if path.is_file() else {}
