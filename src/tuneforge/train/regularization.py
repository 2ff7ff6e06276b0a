"""Staying close to the base: a proximal penalty toward the pre-trained weights, added to any objective's loss.

    training:
      regularization:
        l2sp: 0.01                              # weight x sum (theta - theta0)^2
        ewc: {weight: 0.01, n_samples: 64}      # weight x sum F (theta - theta0)^2, F from the general set

theta0 is copied when the trainer is built, before `trainer.train` (on resume the checkpoint is loaded later, so
theta0 is still the pre-trained weights). The Fisher diagonal is the empirical one: the mean over general-set rows of
the squared gradient of the row's answer NLL, computed once at the start, then normalised to mean 1 over the trained
parameters so an ewc weight is on the scale of an l2sp weight.

The term is added in one place, `install_penalty`, which wraps the trainer's `compute_loss` on the instance (as
`count_training_tokens` wraps `training_step`), so every objective's trainer gets it and none carries a copy.
"""
from __future__ import annotations

import torch

from tuneforge.integrations.trainer_loss import loss_scaled_for_accumulation


class ProximalPenalty:
    """weight_l2sp x sum (theta - theta0)^2 + weight_ewc x sum F (theta - theta0)^2 over the trained parameters."""

    def __init__(self, model: torch.nn.Module, *, l2sp: float | None = None, ewc_weight: float | None = None,
                 fisher: dict[str, torch.Tensor] | None = None):
        if ewc_weight is not None and fisher is None:
            raise ValueError("an ewc weight needs a Fisher estimate")
        self.params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.anchor = {name: p.detach().clone() for name, p in self.params}
        self.l2sp, self.ewc_weight, self.fisher = l2sp, ewc_weight, fisher

    def __call__(self) -> torch.Tensor:
        total = None
        for name, p in self.params:
            squared = (p - self.anchor[name]).pow(2)
            term = 0
            if self.l2sp:
                term = self.l2sp * squared.sum()
            if self.ewc_weight:
                term = term + self.ewc_weight * (self.fisher[name] * squared).sum()
            total = term if total is None else total + term
        return total if total is not None else torch.zeros(())


def diagonal_fisher(model: torch.nn.Module, rows: list[dict], *, progress: bool = True,
                    normalise: bool = True) -> dict[str, torch.Tensor]:
    """Mean over `rows` of the squared gradient of each row's loss (`model(**row).loss`), per trained parameter.

    One row per backward pass: squaring a batch's summed gradient would be a different (and wrong) quantity. Dropout
    is off (eval mode) and the gradients are cleared afterwards, so training starts as it would without EWC.
    """
    from tuneforge.console import make_progress
    from tuneforge.models.inference import eval_mode, model_device

    if not rows:
        raise ValueError("a Fisher estimate needs at least one row")
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params}
    device = model_device(model)
    with eval_mode(model), make_progress(progress) as bar:
        task = bar.add_task("Fisher estimate (EWC)", total=len(rows))
        for row in rows:
            model.zero_grad(set_to_none=True)
            loss = model(**{k: v.to(device) for k, v in row.items()}).loss
            loss.backward()
            for name, p in params:
                if p.grad is not None:
                    fisher[name] += p.grad.detach().float().pow(2)
            bar.advance(task)
    model.zero_grad(set_to_none=True)
    for name in fisher:
        fisher[name] /= len(rows)
    if normalise:
        mean = torch.cat([f.flatten() for f in fisher.values()]).mean()
        if mean > 0:
            for name in fisher:
                fisher[name] /= mean
    return {name: f.to(p.dtype) for (name, p), f in zip(params, fisher.values())}


def general_rows(model, tokenizer, path: str | None, n_samples: int) -> list[dict]:
    """The first `n_samples` rows of a general set (`eval --general`'s), as training rows: the prompt the model is
    asked with and the answer it should give, loss on the answer only (the inference engine's scoring rows)."""
    from tuneforge.eval.forgetting import general_items
    from tuneforge.models.inference import InferenceEngine

    engine = InferenceEngine(model, tokenizer, name="ewc")
    out = []
    for item in general_items(path)[:n_samples]:
        ids, mask = engine.answer_row(item)  # the same answer tokens reference_nll scores
        input_ids = torch.tensor([ids])
        labels = torch.tensor([[t if m else -100 for t, m in zip(ids, mask)]])
        out.append({"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels})
    return out


def build_penalty(run_cfg, model, tokenizer, console=None) -> ProximalPenalty | None:
    """The run's penalty (None when training.regularization is off); computes the Fisher for ewc."""
    options = run_cfg.training.regularization
    if not options.active:
        return None
    fisher = None
    if options.ewc is not None:
        rows = general_rows(model, tokenizer, options.ewc.general_data, options.ewc.n_samples)
        fisher = diagonal_fisher(model, rows, progress=console is not None)
        if console is not None:
            console.print(f"[bold]ewc[/] Fisher diagonal from {len(rows)} general-set rows "
                          f"({options.ewc.general_data or 'bundled set'})")
    return ProximalPenalty(model, l2sp=options.l2sp, ewc_weight=options.ewc.weight if options.ewc else None,
                           fisher=fisher)


def install_penalty(trainer, penalty: ProximalPenalty) -> None:
    """Add `penalty()` to the training loss of `trainer` (evaluation losses stay the objective's own), and log its
    mean since the previous log line as `regularization_penalty` (log history, metrics.jsonl, trackers)."""
    original_loss, original_log = trainer.compute_loss, trainer.log
    since_log = []

    def compute_loss(model, inputs, return_outputs=False, num_items_in_batch=None, **kwargs):
        result = original_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch,
                               **kwargs)
        if not model.training:
            return result
        loss, outputs = result if return_outputs else (result, None)
        term = penalty().to(loss.device, loss.dtype)
        since_log.append(float(term.detach()))
        if loss_scaled_for_accumulation(trainer, num_items_in_batch):
            # The trainer will not divide this micro-batch's loss by the accumulation steps: the penalty, a
            # per-step quantity, is split over the micro-batches here so a step adds it once.
            term = term / trainer.current_gradient_accumulation_steps
        loss = loss + term
        return (loss, outputs) if return_outputs else loss

    def log(logs, *args, **kwargs):
        if since_log and "loss" in logs:
            logs = {**logs, "regularization_penalty": sum(since_log) / len(since_log)}
            since_log.clear()
        return original_log(logs, *args, **kwargs)

    trainer.compute_loss, trainer.log = compute_loss, log
