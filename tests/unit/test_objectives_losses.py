"""Objective correctness on a tiny model: a hand-computed DPO loss, which tokens carry loss per objective, reward
accuracy rising on a separable toy set, and the reference model being the adapter-disabled base."""
from __future__ import annotations

import math

import pytest
import torch

from tuneforge.config.schema import RunConfig
from tuneforge.objectives import get_objective
from tuneforge.train.data_prep import PreparedData, pack_text

PROMPT = [{"role": "user", "content": "Name a colour."}]
PAIRS = [
    {"prompt": PROMPT, "chosen": [{"role": "assistant", "content": "Blue."}],
     "rejected": [{"role": "assistant", "content": "I like turtles very much."}]},
    {"prompt": "2+2=", "chosen": " 4", "rejected": " five"},
]


def run_config(tmp_path, objective: dict, method: str = "lora", **training) -> RunConfig:
    return RunConfig.model_validate({
        "data": {"train": "unused.jsonl", "max_length": 64},
        "method": {"name": method, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
        "objective": objective,
        "training": {"max_steps": 1, "batch_size": 2, "learning_rate": 1e-3, "warmup_ratio": 0.0,
                     "lr_scheduler": "constant", **training},
        "output": {"dir": str(tmp_path)},
    })


def prepared_pairs(rows) -> PreparedData:
    from tuneforge.data.render_preference import to_trl_rows

    return PreparedData(splits={}, rendered={}, stats={}, template=None, train_dataset=to_trl_rows(rows, "preference"))


def build(cfg, model, tokenizer, prepared, tmp_path):
    from tuneforge.methods import get_method

    objective = get_objective(cfg.objective)
    method = get_method(cfg.method)
    model = objective.prepare_model(model)
    model = method.apply(model)
    objective.after_method(model)
    trainer = objective.build_trainer(cfg, model, tokenizer, prepared, tmp_path / "ckpt", [])
    return objective, model, trainer


def first_batch(trainer, n: int):
    rows = [trainer.train_dataset[i] for i in range(n)]
    return trainer.data_collator(rows)


def completion_logps(model, input_ids, completion_mask):
    logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits.float()
    logps = torch.log_softmax(logits[:, :-1], -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return (logps * completion_mask[:, 1:]).sum(1)


def test_dpo_loss_equals_hand_computed_and_reference_is_adapter_disabled_base(tmp_path, tiny_model, tokenizer):
    from tuneforge.data.render_preference import to_trl_preference, tokenize_completion
    from tuneforge.objectives.preference import dpo_loss_by_hand

    beta = 0.5
    cfg = run_config(tmp_path, {"name": "dpo", "dpo": {"beta": beta}})
    _, model, trainer = build(cfg, tiny_model, tokenizer, prepared_pairs(PAIRS[:1]), tmp_path)
    # Move the policy away from the reference (the adapter starts as an exact identity).
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B.default" in name:
                param.normal_(std=0.5)
    batch = first_batch(trainer, 1)
    ids, mask = batch["input_ids"], batch["completion_mask"]
    # Our own tokenization of the pair agrees with TRL's: same ids, loss on the completion only.
    trl = to_trl_preference(PAIRS[0])
    for row, side in zip(range(2), ("chosen", "rejected")):
        own = tokenize_completion(tokenizer, trl["prompt"], trl[side], 64)
        n = int(batch["attention_mask"][row].sum())
        assert ids[row, :n].tolist() == own["input_ids"]
        assert mask[row, :n].tolist() == own["assistant_masks"]
        assert mask[row, n:].sum() == 0
    model.eval()
    with torch.no_grad():
        policy = completion_logps(model, ids, mask)
        with model.disable_adapter():
            ref = completion_logps(model, ids, mask)
        expected = dpo_loss_by_hand(policy[0].item(), policy[1].item(), ref[0].item(), ref[1].item(), beta)
        # TRL's loss for the same batch through our objective's trainer (padding of the shorter row included).
        loss = trainer.compute_loss(model, batch)
    assert abs(policy[0] - ref[0]) > 1e-3  # the check below is not trivially log(2)
    assert loss.item() == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert expected != pytest.approx(math.log(2), abs=1e-3)


def test_dpo_after_train_drops_trl_reference_adapter(tmp_path, tiny_model, tokenizer):
    cfg = run_config(tmp_path, {"name": "dpo"})
    objective, model, trainer = build(cfg, tiny_model, tokenizer, prepared_pairs(PAIRS), tmp_path)
    model = objective.after_train(trainer.model)
    assert list(model.peft_config) == ["default"]


def test_dpo_loss_types_reach_trl(tmp_path):
    cfg = run_config(tmp_path, {"name": "dpo", "dpo": {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5],
                                                       "beta": 0.2}})
    args = get_objective(cfg.objective).training_arguments(cfg, tmp_path, has_eval=False)
    from trl import DPOConfig

    config = DPOConfig(**args)
    assert config.loss_type == ["sigmoid", "sft"] and config.loss_weights == [1.0, 0.5] and config.beta == 0.2


def test_kto_loss_mask_is_completion_only(tmp_path, tiny_model, tokenizer):
    from tuneforge.data.render_preference import to_trl_kto, tokenize_completion

    rows = [{"prompt": PROMPT, "completion": [{"role": "assistant", "content": "Blue."}], "label": True},
            {"prompt": PROMPT, "completion": [{"role": "assistant", "content": "Turtles."}], "label": False}]
    trl_rows = [to_trl_kto(r) for r in rows]
    cfg = run_config(tmp_path, {"name": "kto"})
    prepared = PreparedData(splits={}, rendered={}, stats={}, template=None, train_dataset=trl_rows)
    _, _, trainer = build(cfg, tiny_model, tokenizer, prepared, tmp_path)
    batch = first_batch(trainer, 2)
    for row in range(2):
        own = tokenize_completion(tokenizer, trl_rows[row]["prompt"], trl_rows[row]["completion"], 64)
        n = int(batch["attention_mask"][row].sum())
        assert batch["input_ids"][row, :n].tolist() == own["input_ids"]
        assert batch["completion_mask"][row, :n].tolist() == own["assistant_masks"]
    assert batch["label"].tolist() == [True, False]


def test_orpo_labels_cover_completions_only(tmp_path, tiny_model, tokenizer):
    from tuneforge.data.render_preference import to_trl_preference, tokenize_completion

    cfg = run_config(tmp_path, {"name": "orpo"})
    _, _, trainer = build(cfg, tiny_model, tokenizer, prepared_pairs(PAIRS[:1]), tmp_path)
    batch = first_batch(trainer, 1)
    trl = to_trl_preference(PAIRS[0])
    for side in ("chosen", "rejected"):
        own = tokenize_completion(tokenizer, trl["prompt"], trl[side], 64)
        labels = batch[f"{side}_labels"][0].tolist()
        trained = [i for i, label in enumerate(labels) if label != -100]
        expected = [i for i, m in enumerate(own["assistant_masks"]) if m]
        # No prompt token is trained; experimental ORPO appends one EOS after the templated completion (measured
        # with TRL 1.16), and that EOS is trained too.
        assert trained == expected + [len(own["input_ids"])]
        assert labels[len(own["input_ids"])] == tokenizer.eos_token_id


def test_cpt_packs_documents_with_eos_and_trains_every_token(tokenizer):
    rows = [{"text": "alpha beta gamma"}, {"text": "delta"}, {"text": "epsilon zeta eta theta iota kappa"}]
    rendered, stats = pack_text(rows, tokenizer, block_size=4)
    stream = []
    for row in rows:
        stream += tokenizer(row["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert [t for block in rendered for t in block["input_ids"]] == stream[: len(rendered) * 4]
    assert all(len(b["input_ids"]) == 4 and b["assistant_masks"] == [1, 1, 1, 1] for b in rendered)
    assert stats["dropped_tokens"] == len(stream) % 4 and stats["trained_share"] == 1.0


def test_sft_trainer_labels_follow_assistant_masks(tmp_path, tiny_model, tokenizer):
    rows = [{"input_ids": [1, 5, 6, 7, 8], "assistant_masks": [0, 0, 1, 1, 0], "truncated": False}]
    cfg = run_config(tmp_path, {"name": "sft"})
    prepared = PreparedData(splits={}, rendered={"train": rows}, stats={}, template=None)
    _, _, trainer = build(cfg, tiny_model, tokenizer, prepared, tmp_path)
    batch = first_batch(trainer, 1)
    assert batch["labels"][0].tolist() == [-100, -100, 6, 7, -100]


def test_reward_accuracy_rises_on_separable_pairs(tmp_path, tiny_model, tokenizer):
    from tuneforge.data.render_preference import to_trl_preference

    words = ["apple", "river", "stone", "cloud", "green", "music", "paper", "light"]
    rows = [{"prompt": f"Say {w}.", "chosen": f" {w} GOOD", "rejected": f" {w} BAD"} for w in words]
    cfg = run_config(tmp_path, {"name": "reward"}, method="full", max_steps=25, batch_size=4, learning_rate=3e-3)
    prepared = prepared_pairs(rows)
    pairs = []
    for r in map(to_trl_preference, rows):
        pairs.append((tokenizer(r["prompt"] + r["chosen"])["input_ids"],
                      tokenizer(r["prompt"] + r["rejected"])["input_ids"]))
    prepared.extra["pairs"] = pairs
    objective, model, trainer = build(cfg, tiny_model, tokenizer, prepared, tmp_path)
    assert type(model).__name__.endswith("ForSequenceClassification")
    before = objective.objective_metrics(model, tokenizer, prepared, cfg)
    trainer.train()
    after = objective.objective_metrics(trainer.model, tokenizer, prepared, cfg)
    assert after["reward_accuracy"] == 1.0
    assert after["reward_margin"] > before["reward_margin"] + 0.5


def test_reward_head_is_trainable_under_lora(tmp_path, tiny_model, tokenizer):
    cfg = run_config(tmp_path, {"name": "reward"})
    _, model, _ = build(cfg, tiny_model, tokenizer, prepared_pairs(PAIRS), tmp_path)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # PEFT's SEQ_CLS wrapper trains (and saves with the adapter) a copy of the head in modules_to_save.
    assert [n for n in trainable if "score" in n] == ["base_model.model.score.modules_to_save.default.weight"]
    assert any("lora_A" in n for n in trainable)
    assert not any("embed_tokens" in n for n in trainable)


def test_rewards_resolve_and_score():
    from tuneforge.errors import ConfigError
    from tuneforge.objectives.rewards import resolve_reward

    json_valid, json_fields = resolve_reward("json_valid"), resolve_reward("json_fields")
    assert json_valid(None, ['{"a": 1}', "nope", [{"role": "assistant", "content": ' {"b": 2} '}]]) == [1.0, 0.0, 1.0]
    assert json_fields(None, ['{"a": 1, "b": 2}'], reference=['{"a": 1, "b": 3}']) == [0.5]
    with pytest.raises(ConfigError, match="reference answer"):
        json_fields(None, ['{"a": 1}'])
    assert resolve_reward("rougeL")(None, ["the cat sat"], reference=["the cat sat"]) == [1.0]
    assert resolve_reward("tuneforge.objectives.rewards:length_penalty")(None, ["abcd"]) == [-0.04]
    with pytest.raises(ConfigError, match="objective.rl.reward"):
        resolve_reward("no_such_module:f")


def test_prompt_learning_classifier_still_needs_the_lent_generation_hook():
    """If peft's disable_adapter stops reading prepare_inputs_for_generation, integrations/peft_seqcls.py can go."""
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from tests.tiny_models import build_tiny_model
    from tuneforge.integrations.peft_seqcls import lend_generation_hook

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=1, pad_token_id=0)
    prompt = PromptTuningConfig(num_virtual_tokens=2, task_type=TaskType.SEQ_CLS)
    ids = torch.tensor([[1, 2, 3]])
    bare = get_peft_model(LlamaForSequenceClassification(config), prompt)
    with pytest.raises(UnboundLocalError):
        with bare.disable_adapter():
            pass
    classifier = LlamaForSequenceClassification(config)
    lend_generation_hook(classifier, build_tiny_model())
    wrapped = get_peft_model(classifier, prompt)
    with wrapped.disable_adapter():
        assert wrapped(input_ids=ids).logits.shape == (1, 1)
