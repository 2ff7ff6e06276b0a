"""KTO on TRL's KTOTrainer: single completions labelled desirable (true) or undesirable (false).

Data: {"prompt", "completion", "label"} rows. Loss covers completion tokens only (TRL's completion_mask). The
reference is handled as for DPO: with a PEFT model TRL switches the adapter off (or uses its frozen "ref" copy),
deleted after training. Held-out metrics: validation NLL of desirable completions, and generation on test prompts
scored against desirable completions.
"""
from __future__ import annotations

from tuneforge.objectives.base import trainer_arguments, with_early_stopping
from tuneforge.objectives.preference import DPOObjective, PreferenceObjective


class KTOObjective(PreferenceObjective):
    name = "kto"
    data_format = "kto"

    def prepare(self, run_cfg, tokenizer):
        from tuneforge.data.render_preference import reference_of, to_trl_rows, tokenize_completion
        from tuneforge.eval.tasks import make_item
        from tuneforge.train.data_prep import PreparedData, load_splits

        splits = load_splits(run_cfg.data, self.data_format)
        trl_rows = {name: to_trl_rows(loaded.rows, "kto") for name, loaded in splits.items()}
        labels = [r["label"] for r in trl_rows["train"]]
        if all(labels) or not any(labels):
            from tuneforge.errors import DataError

            raise DataError(f"{splits['train'].path}: KTO needs both desirable (label true) and undesirable "
                            "(label false) rows", hint="add rows of the missing label")
        rendered, stats = {}, {}
        for name in ("train", "validation"):
            if name not in trl_rows:
                continue
            rows = [tokenize_completion(tokenizer, r["prompt"], r["completion"], run_cfg.data.max_length)
                    for r in trl_rows[name]]
            tokens = sum(len(r["input_ids"]) for r in rows)
            trained = sum(sum(r["assistant_masks"]) for r in rows)
            stats[name] = {"examples": len(rows), "tokens": tokens, "trained_tokens": trained,
                           "trained_share": trained / tokens if tokens else 0.0,
                           "truncated": sum(r["truncated"] for r in rows),
                           "desirable": sum(r["label"] for r in trl_rows[name])}
            # Eval loss: NLL of the desirable completions, the behaviour KTO pushes up.
            rendered[name] = [row for row, r in zip(rows, trl_rows[name]) if r["label"]]
        items = []
        if "test" in splits:
            test = splits["test"]
            for i, row in enumerate(test.rows):
                if not row["label"] or (run_cfg.eval.max_items and len(items) >= run_cfg.eval.max_items):
                    continue
                items.append(make_item((row.get("meta") or {}).get("id", test.where(i)), test.where(i),
                                       trl_rows["test"][i]["prompt"], reference_of(row)))
        return PreparedData(splits=splits, rendered=rendered, stats=stats, template=None, items=items,
                            train_dataset=trl_rows["train"], eval_dataset=trl_rows.get("validation"))

    def build_trainer(self, run_cfg, model, tokenizer, prepared, output_dir, callbacks):
        from trl import KTOConfig, KTOTrainer

        options = self.config.kto
        train, evaluation = self._datasets(prepared)
        args = trainer_arguments(run_cfg, output_dir, has_eval=evaluation is not None)
        args.update(max_length=run_cfg.data.max_length, loss_type=options.loss_type, beta=options.beta,
                    desirable_weight=options.desirable_weight, undesirable_weight=options.undesirable_weight)
        return KTOTrainer(model=model, args=KTOConfig(**args), train_dataset=train, eval_dataset=evaluation,
                          processing_class=tokenizer,
                          callbacks=with_early_stopping(callbacks, run_cfg, evaluation is not None))

    after_train = DPOObjective.after_train
