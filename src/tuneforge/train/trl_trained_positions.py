"""TRL's SFTTrainer with the LM head and loss computed at trained positions only (tuneforge.train.trained_positions).

Upstream behaviour worked around (TRL 1.16): SFTTrainer patches a fused, vocabulary-chunked LM head onto the model
and scores only the labelled positions on CUDA/XPU (Triton), but on every other device (CPU included) it scores all
positions (to keep tile shapes fixed for compilers such as Neuron's), recomputes the logits in the backward pass and
folds entropy/top-1 statistics over every position. On CPU that is most of the LM head's cost spent on prompt and
padding positions whose loss is then multiplied by zero.

`compute_loss` below is TRL's own (same normalisation: sum over trained tokens / `num_items_in_batch`, the same
`entropy`, `mean_token_accuracy` and `num_tokens` metrics) with the forward replaced; anything it cannot reproduce
exactly (label smoothing, a custom loss function, DFT loss, MoE auxiliary loss, sequence parallelism, pre-shifted
labels, `return_outputs`, or a model `unsupported_reason` refuses) goes to TRL's path unchanged. That path is also
the reference: `training.loss_at_trained_positions: false` builds the plain SFTTrainer.
"""
from __future__ import annotations

import torch
from trl import SFTTrainer

from tuneforge.train.trained_positions import trained_positions_loss, unsupported_reason


class TrainedPositionsSFTTrainer(SFTTrainer):
    #: Why the last batch took TRL's path (None: trained positions only); read by tests and the run log.
    fallback_reason: str | None = None

    def _own_path_refusal(self, model, inputs, return_outputs) -> str | None:
        if return_outputs:
            return "the caller wants the logits"
        if self.compute_loss_func is not None or self.label_smoother is not None or self.args.loss_type != "nll":
            return "a custom loss, label smoothing or a non-nll loss_type"
        if self.aux_loss_enabled:
            return "the model adds an MoE auxiliary loss"
        parallelism = getattr(self.accelerator, "parallelism_config", None)
        if parallelism is not None and (getattr(parallelism, "sp_enabled", False)
                                        or getattr(parallelism, "cp_enabled", False)):
            return "sequence/context parallelism"
        if "labels" not in inputs or "shift_labels" in inputs:
            return "the batch has no plain `labels`"
        return unsupported_reason(model)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.fallback_reason = self._own_path_refusal(model, inputs, return_outputs)
        if self.fallback_reason is not None:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        # The decoder and head are called directly, not through the forward accelerate wraps in autocast for
        # mixed precision, so the autocast context is entered here.
        with self.accelerator.autocast():
            result = trained_positions_loss(model, inputs, num_items_in_batch)
        loss = result.loss
        # As TRL (and Trainer): num_items_in_batch counts every rank's tokens and DDP averages gradients across ranks.
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())

        device = loss.device
        gather = self.accelerator.gather_for_metrics
        num_valid = gather(torch.tensor(result.trained_tokens, device=device)).sum()
        entropy_sum = gather(torch.tensor(result.entropy_sum, device=device)).sum()
        num_correct = gather(torch.tensor(result.correct, device=device)).sum()
        self._metrics[mode]["entropy"].append((entropy_sum / num_valid).item() if num_valid > 0 else 0.0)
        self._metrics[mode]["mean_token_accuracy"].append((num_correct / num_valid).item() if num_valid > 0 else 0.0)
        if mode == "train":
            if "attention_mask" in inputs:
                tokens = gather(inputs["attention_mask"].sum()).sum().item()
            else:  # padding-free batches: one row of real tokens
                tokens = gather(torch.tensor(inputs["position_ids"].size(1), device=device)).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return loss
