"""Trainer callbacks: a rich progress bar, per-step metrics.jsonl, and token/padding accounting."""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from transformers import TrainerCallback

from tuneforge.console import make_console


class TrainingTokenCounter:
    """Real (non-padding), total and trained (labelled) tokens of the batches the trainer trained on.

    The padding share is the honest measure of how well batching works; the trainer does not expose it. Counting
    happens in `training_step` (see `count_training_tokens`), not in the data collator: the collator also builds
    the evaluation batches and the batch the dataloader prefetches, which a short run with frequent evaluation
    counted several times over.
    """

    def __init__(self):
        self.real_tokens = 0
        self.total_tokens = 0
        self.trained_tokens = 0
        #: The seconds those tokens took: a callback `count_training_tokens` adds to the trainer.
        self.clock = TrainingClock()

    @property
    def tokens_per_second(self) -> float | None:
        """Non-padding tokens over the time spent training (evaluations and checkpoint saves left out)."""
        if self.clock.started is None:
            return None
        return self.real_tokens / max(self.clock.training_seconds(), 1e-9)

    def count(self, batch) -> None:
        if "input_ids" not in batch:
            return  # not a token batch; never fail a training step over bookkeeping
        total = int(batch["input_ids"].numel())
        # Padding-free packing (position_ids, no attention_mask) has no padding to leave out.
        self.real_tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else total
        self.total_tokens += total
        if "labels" in batch:
            self.trained_tokens += int((batch["labels"] != -100).sum())

    @property
    def padding_share(self) -> float:
        return 0.0 if not self.total_tokens else 1.0 - self.real_tokens / self.total_tokens


class TrainingClock(TrainerCallback):
    """Seconds `trainer.train()` spent training: its loop's wall time minus the evaluations and checkpoint saves.

    A throughput that counts the evaluation at the end of a run (or one every N steps) and the checkpoint writes is
    not the training's; the trainer's own `train_runtime` includes both. The Trainer runs them after
    `on_step_end` and reports each with `on_evaluate` / `on_save` when it is done, so the time from the last
    step's end (or the last of those events) to each event is left out.
    """

    def __init__(self):
        self.started: float | None = None
        self.ended: float | None = None
        self.paused = 0.0
        self._mark = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = self._mark = time.perf_counter()
        self.ended, self.paused = None, 0.0

    def on_step_end(self, args, state, control, **kwargs):
        self._mark = time.perf_counter()

    def _pause(self) -> None:
        if self.started is None or self.ended is not None:
            return  # an evaluation outside train(): not part of the loop
        now = time.perf_counter()
        self.paused += now - self._mark
        self._mark = now

    def on_evaluate(self, args, state, control, **kwargs):
        self._pause()

    def on_save(self, args, state, control, **kwargs):
        self._pause()

    def on_train_end(self, args, state, control, **kwargs):
        self.ended = time.perf_counter()

    def training_seconds(self) -> float:
        if self.started is None:
            return 0.0
        return (self.ended or time.perf_counter()) - self.started - self.paused


def count_training_tokens(trainer) -> TrainingTokenCounter:
    """Count the tokens of every micro-batch `trainer` trains on from now on (one call each, with accumulation),
    and the seconds spent training them (`counter.clock`, a callback added to `trainer`).

    `training_step` is the Trainer's documented override point, called once per micro-batch that gets a forward
    and backward pass; wrapping it on the instance keeps TRL's own override (e.g. activation offloading) intact.
    """
    counter = TrainingTokenCounter()
    trainer.add_callback(counter.clock)
    step = trainer.training_step

    @functools.wraps(step)
    def counted_training_step(model, inputs, *args, **kwargs):
        counter.count(inputs)
        return step(model, inputs, *args, **kwargs)

    trainer.training_step = counted_training_step
    return counter


def train_loss_summary(metrics_path: Path) -> dict:
    """Mean and last logged train loss over the whole run, read back from metrics.jsonl.

    transformers' TrainOutput.training_loss averages only the steps of the current train() call, so after a resume it
    would describe the resumed part alone; metrics.jsonl holds every step of the run (resume truncates it to the
    checkpoint, then appends).
    """
    losses = []
    if metrics_path.is_file():
        for line in metrics_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record.get("loss"), (int, float)):
                losses.append(float(record["loss"]))
    if not losses:
        return {"train_loss": None, "final_train_loss": None}
    return {"train_loss": sum(losses) / len(losses), "final_train_loss": losses[-1]}


class MetricsCallback(TrainerCallback):
    """Appends every log event (train loss, eval loss, LR, tokens/s) to metrics.jsonl as one JSON line."""

    def __init__(self, path: Path, counter: TrainingTokenCounter | None = None):
        self.path = path
        self.counter = counter
        self._start = None
        self._last_tokens = 0
        self._last_time = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()
        self._last_time = 0.0
        self._last_tokens = self.counter.real_tokens if self.counter else 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now = time.perf_counter()
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        record.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})
        if self.counter is not None and "loss" in logs:
            # Training seconds since the last train log (evaluations and saves in between left out).
            trained_s = self.counter.clock.training_seconds()
            tokens = self.counter.real_tokens - self._last_tokens
            record["tokens_per_second"] = round(tokens / max(trained_s - self._last_time, 1e-9), 2)
            record["padding_share"] = round(self.counter.padding_share, 4)
            self._last_tokens, self._last_time = self.counter.real_tokens, trained_s
        record["elapsed_s"] = round(now - (self._start or now), 3)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def batches_line(args) -> str:
    """What one optimizer step trains on, in the unit the batch size really counts (packing changes it)."""
    if getattr(args, "packing", False):
        unit = "packed rows"
        note = f" (a packed row holds several examples, up to {args.max_length} tokens)"
    else:
        unit = "completions" if hasattr(args, "num_generations") else "examples"  # GRPO/RLOO batch completions
        note = ""
    batch, accumulation, processes = (args.per_device_train_batch_size, args.gradient_accumulation_steps,
                                      args.world_size)
    return (f"[bold]batches[/] {batch} {unit} per device{note} x {accumulation} accumulation x {processes} "
            f"process{'es' if processes > 1 else ''} = {batch * accumulation * processes} {unit} per optimizer step")


class RichProgressCallback(TrainerCallback):
    """Step progress with loss, non-padding tokens/s and ETA (replaces the trainer's tqdm bars)."""

    def __init__(self, counter: TrainingTokenCounter | None = None, console: Console | None = None):
        self.counter = counter
        self.console = console or make_console()
        self.progress: Progress | None = None
        self.task = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.console.print(batches_line(args), highlight=False)
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("eval {task.fields[eval_loss]}"),
            TextColumn("{task.fields[tps]} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=state.max_steps, loss="-", eval_loss="-", tps="-")

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is None:
            return
        rate = self.counter.tokens_per_second if self.counter else None
        tps = f"{rate:.0f}" if rate is not None else "-"
        self.progress.update(self.task, completed=state.global_step, tps=tps)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is None or not logs:
            return
        if "loss" in logs:
            self.progress.update(self.task, loss=f"{logs['loss']:.4f}")
        if "eval_loss" in logs:
            self.progress.update(self.task, eval_loss=f"{logs['eval_loss']:.4f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
            self.progress.stop()
            self.progress = None
