"""Reward-model training on preference pairs with TRL's RewardTrainer (Bradley-Terry: -log sigmoid(r_c - r_r)).

The base causal LM is turned into a sequence classifier by reusing its backbone module (no copy, so whatever the
method loaded - full precision or quantized - is kept) and adding a fresh 1-output `score` head. The method then
wraps it. The head is new, so it is always trained: PEFT methods see a sequence classifier, wrap it as
TaskType.SEQ_CLS and keep the head in modules_to_save, so adapter/ carries it and rebuilds the reward model on the
base; `freeze` leaves it trainable through after_method. Held-out metric: reward accuracy, the share of validation
pairs scored chosen > rejected. No generation eval: a reward model does not generate.
"""
from __future__ import annotations

from tuneforge.objectives.base import trainer_arguments, with_early_stopping
from tuneforge.objectives.preference import PreferenceObjective


def as_reward_model(causal_lm):
    """The causal LM's backbone under an AutoModelForSequenceClassification with num_labels = 1."""
    import torch
    from transformers import AutoModelForSequenceClassification

    config = causal_lm.config
    config.num_labels = 1
    dtype = next(causal_lm.parameters()).dtype
    with torch.device("meta"):
        reward = AutoModelForSequenceClassification.from_config(config)
    prefix = reward.base_model_prefix
    setattr(reward, prefix, getattr(causal_lm, causal_lm.base_model_prefix))
    reward.score = torch.nn.Linear(config.hidden_size, 1, bias=False, dtype=dtype)
    torch.nn.init.normal_(reward.score.weight, std=config.hidden_size ** -0.5)
    reward.config.pad_token_id = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
    # transformers records quantisation on the model object that from_pretrained built (QLoRA's 4-bit base), not on
    # the backbone; the classifier shares that backbone, so it carries the record too (QLoRA's merge calls
    # dequantize(), which reads hf_quantizer). is_loaded_in_4bit is left off on purpose: TRL's RewardTrainer casts
    # every trainable parameter of a model so flagged to bf16, which would leave the plain score head in bf16
    # against fp32 hidden states and keep the adapter from training in the compute dtype the user chose.
    for attribute in ("hf_quantizer", "is_quantized", "quantization_method"):
        if hasattr(causal_lm, attribute):
            setattr(reward, attribute, getattr(causal_lm, attribute))
    from tuneforge.integrations.peft_seqcls import lend_generation_hook

    lend_generation_hook(reward, causal_lm)  # prefix/prompt tuning: see the integration's docstring
    return reward


def score_pairs(model, pairs: list[tuple[list[int], list[int]]], batch_size: int = 8) -> list[tuple[float, float]]:
    import torch

    from tuneforge.models.inference import eval_mode

    device = next(model.parameters()).device
    flat = [ids for pair in pairs for ids in pair]
    scores: list[float] = []
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(flat), batch_size):
            batch = flat[start:start + batch_size]
            width = max(len(b) for b in batch)
            ids = torch.full((len(batch), width), model.config.pad_token_id or 0, dtype=torch.long)
            attn = torch.zeros_like(ids)
            for i, b in enumerate(batch):  # right padding: the classifier reads the last non-pad token
                ids[i, :len(b)] = torch.tensor(b)
                attn[i, :len(b)] = 1
            scores.extend(model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits[:, 0].tolist())
    return list(zip(scores[0::2], scores[1::2]))


class RewardObjective(PreferenceObjective):
    name = "reward"

    def prepare(self, run_cfg, tokenizer):
        prepared = super().prepare(run_cfg, tokenizer)
        prepared.extra["pairs"] = [(c["input_ids"], r["input_ids"]) for c, r in prepared.extra["pairs"]]
        prepared.rendered.pop("validation", None)  # an LM loss means nothing for a classifier
        prepared.items = []
        return prepared

    def prepare_model(self, model):
        return as_reward_model(model)

    def after_method(self, model) -> None:
        # PEFT's modules_to_save copy is named score.modules_to_save.default.weight and is already trainable; this
        # reaches the plain head under methods that freeze by name (freeze).
        for name, param in model.named_parameters():
            if name.endswith("score.weight"):
                param.requires_grad_(True)

    def objective_metrics(self, model, tokenizer, prepared, run_cfg) -> dict:
        pairs = prepared.extra.get("pairs") or []
        if not pairs:
            return {}
        scored = score_pairs(model, pairs, run_cfg.training.batch_size)
        return {"reward_accuracy": sum(c > r for c, r in scored) / len(scored),
                "reward_margin": sum(c - r for c, r in scored) / len(scored), "pairs": len(scored)}

    def build_trainer(self, run_cfg, model, tokenizer, prepared, output_dir, callbacks):
        from trl import RewardConfig, RewardTrainer

        train, evaluation = self._datasets(prepared)
        args = trainer_arguments(run_cfg, output_dir, has_eval=evaluation is not None)
        args.update(max_length=run_cfg.data.max_length,
                    center_rewards_coefficient=self.config.reward.center_rewards_coefficient)
        return RewardTrainer(model=model, args=RewardConfig(**args), train_dataset=train, eval_dataset=evaluation,
                             processing_class=tokenizer,
                             callbacks=with_early_stopping(callbacks, run_cfg, evaluation is not None))
