"""Token-level distillation: the loss, and the SFT trainer that computes it against a frozen teacher.

    loss = alpha x T^2 x KL(teacher_T || student_T) + (1 - alpha) x CE_eps(student, data labels)

per trained position (labels != -100, after the causal shift), summed and divided by the trained tokens of the
whole accumulated batch (`num_items_in_batch`, as TRL's own SFT loss does), so gradient accumulation gives the same
step as one large batch. p_T = softmax(logits / T); the T^2 factor (Hinton et al.) keeps the KL's gradient on the
scale of the hard-label term's as T changes. CE_eps is the label-smoothed cross-entropy of training.label_smoothing
((1 - eps) x NLL + eps x the mean NLL over the vocabulary), as the SFT trainer's label smoother computes it.

TRL's DistillationTrainer / GKDTrainer generate on-policy samples with `model.generate` from prompt datasets; the
project renders and masks its own examples and generates only through the inference engine, so the loss lives here
on top of the SFT trainer (a cross-check against TRL's GKD loss is in the tests).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def token_distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
                       temperature: float = 1.0, alpha: float = 0.5, label_smoothing: float = 0.0,
                       num_items: int | torch.Tensor | None = None, shifted: bool = False):
    """(loss, {"kl", "ce"}: per-token means) for [batch, seq, vocab] logits and [batch, seq] labels.

    `shifted`: the labels are already aligned with the logits (a padding-free collator's `shift_labels`);
    otherwise position t's logits predict labels[t + 1]. Logits are compared over the vocabulary both models
    have (a model may pad its output layer past the tokenizer's size)."""
    if not shifted:
        student_logits, teacher_logits, labels = student_logits[:, :-1], teacher_logits[:, :-1], labels[:, 1:]
    vocab = min(student_logits.size(-1), teacher_logits.size(-1))
    keep = labels != -100
    student = student_logits[keep][:, :vocab].float()
    teacher = teacher_logits[keep][:, :vocab].float()
    targets = labels[keep]
    student_t = F.log_softmax(student / temperature, dim=-1)
    teacher_t = F.log_softmax(teacher / temperature, dim=-1)
    kl = (teacher_t.exp() * (teacher_t - student_t)).sum(-1)
    logp = F.log_softmax(student, dim=-1)
    nll = -logp.gather(-1, targets[:, None]).squeeze(-1)
    ce = (1 - label_smoothing) * nll - label_smoothing * logp.mean(-1)
    per_token = alpha * temperature ** 2 * kl + (1 - alpha) * ce
    denominator = torch.as_tensor(keep.sum() if num_items is None else num_items).to(per_token.device).clamp(min=1)
    stats = {"kl": float(kl.detach().mean()) if kl.numel() else 0.0,
             "ce": float(ce.detach().mean()) if ce.numel() else 0.0}
    return per_token.sum() / denominator, stats


#: Batch keys both models take (the SFT collator's; labels are the loss's own).
_FORWARD_KEYS = ("input_ids", "attention_mask", "position_ids")


@functools.cache
def distill_trainer_class():
    from trl import SFTTrainer

    class DistillTrainer(SFTTrainer):
        """SFTTrainer whose training loss is `token_distill_loss` against `teacher` (frozen, eval mode)."""

        def __init__(self, *args, teacher, temperature: float, alpha: float, label_smoothing: float, **kwargs):
            super().__init__(*args, **kwargs)
            self.teacher = teacher.eval().requires_grad_(False)
            self.temperature, self.alpha, self.label_smoothing = temperature, alpha, label_smoothing

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            shifted = "shift_labels" in inputs
            labels = inputs["shift_labels"] if shifted else inputs["labels"]
            forward = {k: inputs[k] for k in _FORWARD_KEYS if k in inputs}
            outputs = model(**forward, use_cache=False)
            with torch.no_grad():
                teacher_logits = self.teacher(**forward, use_cache=False).logits
            # Prompt tuning prepends virtual tokens to the student's sequence: its last positions are the text's.
            student_logits = outputs.logits[:, -teacher_logits.size(1):]
            loss, stats = token_distill_loss(student_logits, teacher_logits, labels, temperature=self.temperature,
                                             alpha=self.alpha, label_smoothing=self.label_smoothing,
                                             num_items=num_items_in_batch, shifted=shifted)
            mode = "train" if model.training else "eval"
            metrics = getattr(self, "_metrics", None)
            if metrics is not None:  # averaged into the next log line by TRL's `log`
                metrics[mode]["distill_kl"].append(stats["kl"])
                metrics[mode]["distill_ce"].append(stats["ce"])
            return (loss, outputs) if return_outputs else loss

    return DistillTrainer
