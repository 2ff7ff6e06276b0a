"""Multi-task SFT: several tasks' files mixed by weight (tuneforge.data.mix), evaluated per task.

The files under `data:` are one task (objective.multitask.data_task); objective.multitask.tasks adds others. Every
task is rendered exactly as single-task SFT renders it (its own template proof), then the training rows are sampled
without replacement to the weights. Evaluation adds per-task eval loss and per-task generation metrics, written to
results.json as models.<label>.slices.<task>.
"""
from __future__ import annotations

from tuneforge.errors import ConfigError
from tuneforge.objectives.sft import SFTObjective


class MultitaskObjective(SFTObjective):
    name = "multitask"

    def _tasks(self, data_cfg) -> list:
        options = self.config.multitask
        main = {"name": options.data_task, "train": data_cfg.train, "validation": data_cfg.validation,
                "test": data_cfg.test, "weight": options.data_weight}
        tasks = [main] + [t.model_dump() for t in options.tasks]
        names = [t["name"] for t in tasks]
        if len(set(names)) != len(names):
            raise ConfigError(f"objective.multitask.tasks: task names must be unique, got {names}",
                              hint="objective.multitask.data_task names the task under `data:`")
        if len(tasks) < 2:
            raise ConfigError("objective.multitask.tasks: a mixture needs at least one task besides `data:`")
        return tasks

    def prepare(self, run_cfg, tokenizer):
        from tuneforge.data.formats import load_dataset_file
        from tuneforge.data.mix import MixSource, mix_datasets
        from tuneforge.train.data_prep import PreparedData, prepare_data

        data_cfg = run_cfg.data
        per_task, splits = {}, {}
        for task in self._tasks(data_cfg):
            task_splits = {s: load_dataset_file(task[s], data_cfg.format)
                           for s in ("train", "validation", "test") if task[s]}
            for loaded in task_splits.values():
                for row in loaded.rows:
                    row["meta"] = {**(row.get("meta") or {}), "task": task["name"]}
            per_task[task["name"]] = prepare_data(data_cfg, tokenizer, max_test_items=run_cfg.eval.max_items,
                                                  splits=task_splits)
            splits.update({f"{task['name']}/{s}": loaded for s, loaded in task_splits.items()})
        tasks = self._tasks(data_cfg)
        weights = {t["name"]: t["weight"] for t in tasks}
        sizes = {name: len(p.splits["train"].rows) for name, p in per_task.items()}
        share = {name: w / sum(weights.values()) for name, w in weights.items()}
        # Default size: the largest mixture every task can supply at its weight without repeating a row.
        total = self.config.multitask.total or min(int(sizes[n] / share[n]) for n in sizes)
        sources = [MixSource(name=t["name"], rows=per_task[t["name"]].splits["train"].rows, weight=t["weight"],
                             path=per_task[t["name"]].splits["train"].path,
                             sha256=per_task[t["name"]].splits["train"].sha256) for t in tasks]
        mixed = mix_datasets(sources, total=total, seed=run_cfg.training.seed)
        train = [per_task[r["meta"]["source"]].rendered["train"][r["meta"]["source_index"]] for r in mixed.rows]

        rendered = {"train": train}
        validation = [row for p in per_task.values() for row in p.rendered.get("validation", [])]
        if validation:
            rendered["validation"] = validation
        items = []
        for name, p in per_task.items():
            for item in p.items:
                # The task is the item's slice: the eval pipeline then reports every metric per task.
                items.append({**item, "id": f"{name}/{item['id']}", "slice": name})
        tokens = sum(len(r["input_ids"]) for r in train)
        trained = sum(sum(r["assistant_masks"]) for r in train)
        stats = {"train": {"examples": len(train), "tokens": tokens, "trained_tokens": trained,
                           "trained_share": trained / tokens if tokens else 0.0,
                           "truncated": sum(r["truncated"] for r in train), "mixture": mixed.manifest}}
        first = next(iter(per_task.values()))
        return PreparedData(splits=splits, rendered=rendered, stats=stats, template=first.template, items=items,
                            extra={"tasks": per_task})

    def evaluate(self, model, tokenizer, prepared, run_cfg, label, console):
        """The shared evaluation (metrics per task come as slices), plus each task's own validation loss."""
        from tuneforge.eval.loss import eval_loss

        out = super().evaluate(model, tokenizer, prepared, run_cfg, label, console)
        side = out["side"]
        for name, task in prepared.extra["tasks"].items():
            if not task.rendered.get("validation"):
                continue
            loss = eval_loss(model, task.rendered["validation"], batch_size=run_cfg.training.batch_size,
                             progress=False)
            if side is not None:
                side["slices"].setdefault(name, {}).update(validation_loss=loss["loss"],
                                                           validation_perplexity=loss["perplexity"])
            console.print(f"[bold]{label}[/] task {name}: validation loss {loss['loss']:.4f}")
        return out
