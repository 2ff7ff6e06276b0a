"""Preference objectives on TRL: DPO (DPOTrainer, every loss_type it offers) and ORPO (trl.experimental.orpo).

Data: preference rows {"prompt", "chosen", "rejected"} (strings or message lists). TRL tokenizes them and builds the
completion masks; the loss covers the chosen and rejected completions only, never the prompt.

Reference model: the method has already wrapped the model. With a PEFT model and no ref_model, TRL 1.16 adds a
frozen copy of the (fresh, B = 0) adapter named "ref", which computes exactly the base model's log-probs without a
second model copy; `after_train` deletes it so the exported adapter is only the trained one. Full fine-tuning gets a
reference model built by TRL from the same weights (a second copy: unavoidable without an adapter to switch off).
ORPO needs no reference at all.

Held-out metrics, for base and tuned alike: `preference_accuracy` (share of validation pairs where the model gives
the chosen completion a higher summed log-prob than the rejected one) and the mean log-prob margin; the validation
loss is the NLL of the chosen completions, and generation is scored against the chosen answer on test prompts.
"""
from __future__ import annotations

import math

from tuneforge.objectives.base import Objective, trainer_arguments, with_early_stopping


def sequence_logps(model, rows: list[dict], batch_size: int = 8) -> list[float]:
    """Summed log-prob of the masked tokens of each {"input_ids", "assistant_masks"} row (no grad, eval mode)."""
    from tuneforge.models.inference import masked_token_logps

    scored = masked_token_logps(model, [(r["input_ids"], r["assistant_masks"]) for r in rows], batch_size)
    return [logp for logp, _ in scored]


class PreferenceObjective(Objective):
    data_format = "preference"

    def prepare(self, run_cfg, tokenizer):
        from tuneforge.data.render_preference import reference_of, to_trl_rows, tokenize_completion
        from tuneforge.eval.tasks import make_item
        from tuneforge.train.data_prep import PreparedData, load_splits

        splits = load_splits(run_cfg.data, self.data_format)
        max_length = run_cfg.data.max_length
        trl_rows = {name: to_trl_rows(loaded.rows, "preference") for name, loaded in splits.items()}
        rendered, stats, pairs = {}, {}, []
        for name in ("train", "validation"):
            if name not in trl_rows:
                continue
            chosen = [tokenize_completion(tokenizer, r["prompt"], r["chosen"], max_length) for r in trl_rows[name]]
            rendered[name] = chosen
            tokens = sum(len(c["input_ids"]) for c in chosen)
            trained = sum(sum(c["assistant_masks"]) for c in chosen)
            stats[name] = {"examples": len(chosen), "tokens": tokens, "trained_tokens": trained,
                           "trained_share": trained / tokens if tokens else 0.0,
                           "truncated": sum(c["truncated"] for c in chosen)}
            if name == "validation":
                pairs = [(c, tokenize_completion(tokenizer, r["prompt"], r["rejected"], max_length))
                         for c, r in zip(chosen, trl_rows[name])]
        items = []
        if "test" in splits:
            test = splits["test"]
            count = len(test.rows) if run_cfg.eval.max_items is None else min(run_cfg.eval.max_items, len(test.rows))
            items = [make_item((row.get("meta") or {}).get("id", test.where(i)), test.where(i),
                               trl_rows["test"][i]["prompt"], reference_of(row))
                     for i, row in enumerate(test.rows[:count])]
        return PreparedData(splits=splits, rendered=rendered, stats=stats, template=None, items=items,
                            train_dataset=trl_rows["train"], eval_dataset=trl_rows.get("validation"),
                            extra={"pairs": pairs})

    def objective_metrics(self, model, tokenizer, prepared, run_cfg) -> dict:
        pairs = prepared.extra.get("pairs") or []
        if not pairs:
            return {}
        batch = run_cfg.training.batch_size
        chosen = sequence_logps(model, [c for c, _ in pairs], batch)
        rejected = sequence_logps(model, [r for _, r in pairs], batch)
        margins = [c - r for c, r in zip(chosen, rejected)]
        return {"preference_accuracy": sum(m > 0 for m in margins) / len(margins),
                "logp_margin": sum(margins) / len(margins), "pairs": len(margins)}

    def _datasets(self, prepared):
        from datasets import Dataset

        train = Dataset.from_list(prepared.train_dataset)
        evaluation = Dataset.from_list(prepared.eval_dataset) if prepared.eval_dataset else None
        return train, evaluation


class DPOObjective(PreferenceObjective):
    name = "dpo"

    def training_arguments(self, run_cfg, output_dir, *, has_eval: bool) -> dict:
        options = self.config.dpo
        args = trainer_arguments(run_cfg, output_dir, has_eval=has_eval)
        args.update(max_length=run_cfg.data.max_length, loss_type=list(options.loss_type),
                    loss_weights=options.loss_weights, beta=options.beta, label_smoothing=options.label_smoothing)
        return args

    def build_trainer(self, run_cfg, model, tokenizer, prepared, output_dir, callbacks):
        from trl import DPOConfig, DPOTrainer

        train, evaluation = self._datasets(prepared)
        args = DPOConfig(**self.training_arguments(run_cfg, output_dir, has_eval=evaluation is not None))
        return DPOTrainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation,
                          processing_class=tokenizer,
                          callbacks=with_early_stopping(callbacks, run_cfg, evaluation is not None))

    def after_train(self, model):
        # TRL's frozen reference adapter copy must not be exported next to the trained one.
        if "ref" in getattr(model, "peft_config", {}):
            model.delete_adapter("ref")
            model.set_adapter("default")
        return model


class ORPOObjective(PreferenceObjective):
    """ORPO lives in trl.experimental in TRL 1.16 (its API may change; pinned TRL keeps it stable here)."""

    name = "orpo"
    counts_tokens = False  # its batches hold chosen_/rejected_input_ids, not the input_ids the counter reads
    # TRL 1.16's ORPOTrainer pairs the model's logits with the labels position by position; prompt tuning returns
    # n_virtual more logit positions than input tokens, so training stops with "Expected input batch_size (230) to
    # match target batch_size (198)" (the method x objective matrix test shows it).
    refused_methods = {"prompt": "TRL's ORPO trainer does not skip prompt tuning's virtual-token logits, so its "
                                 "loss would pair logits and labels at the wrong positions; use lora, or dpo"}

    def build_trainer(self, run_cfg, model, tokenizer, prepared, output_dir, callbacks):
        import os

        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        train, evaluation = self._datasets(prepared)
        args = trainer_arguments(run_cfg, output_dir, has_eval=evaluation is not None)
        args.update(max_length=run_cfg.data.max_length, beta=self.config.orpo.beta)
        return ORPOTrainer(model=model, args=ORPOConfig(**args), train_dataset=train, eval_dataset=evaluation,
                           processing_class=tokenizer,
                           callbacks=with_early_stopping(callbacks, run_cfg, evaluation is not None))


def dpo_loss_by_hand(policy_chosen: float, policy_rejected: float, ref_chosen: float, ref_rejected: float,
                     beta: float) -> float:
    """-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))): the DPO paper's loss, for tests and docs."""
    z = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return math.log1p(math.exp(-z)) if z > -30 else -z
