"""The LM head + loss at trained positions only equals the full-logits loss, in value, gradients and training.

Reference: the full path every causal LM defines, `cross_entropy(logits[:, :-1], labels[:, 1:], ignore_index=-100,
reduction="sum") / num_items_in_batch` over all `batch x seq x vocab` logits. The batch has right padding (labels
-100, attention 0), masked prompts, and rows of different trained lengths, so a wrong shift, a dropped position or a
per-row mean would show.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import build_tiny_model
from tuneforge.train import trained_positions
from tuneforge.train.trained_positions import trained_positions_loss, unsupported_reason


def padded_batch():
    torch.manual_seed(3)
    lengths, prompts = [12, 7, 9], [5, 3, 6]  # row 2 trains 3 tokens, row 1 trains 4, row 0 trains 7
    width = max(lengths)
    input_ids = torch.randint(3, 49152, (3, width))
    attention_mask = torch.zeros(3, width, dtype=torch.long)
    labels = torch.full((3, width), -100)
    for row, (length, prompt) in enumerate(zip(lengths, prompts)):
        input_ids[row, length:] = 2  # the pad token
        attention_mask[row, :length] = 1
        labels[row, prompt:length] = input_ids[row, prompt:length]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def full_logits_loss(model, batch, num_items_in_batch=None):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    labels = batch["labels"][:, 1:]
    total = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100,
                            reduction="sum")
    return total / (num_items_in_batch if num_items_in_batch is not None else (labels != -100).sum())


def frozen_head_model():
    model = build_tiny_model()
    model.get_input_embeddings().weight.requires_grad_(False)  # tied: the LM head too
    return model


def lora_model(target_modules=("q_proj", "k_proj", "v_proj", "o_proj")):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(5)
    # init_lora_weights=False: B is random too, so A gets a non-zero gradient to compare.
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=list(target_modules),
                        init_lora_weights=False, task_type="CAUSAL_LM")
    return get_peft_model(build_tiny_model(), config)


def grads_of(model, loss):
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    return dict(zip([name for name, _ in params], torch.autograd.grad(loss, [p for _, p in params]))), len(params)


@pytest.mark.parametrize("build", [frozen_head_model, lora_model], ids=["plain", "lora"])
@pytest.mark.parametrize("num_items", [None, 40], ids=["own-count", "accumulated-count"])
def test_loss_and_gradients_equal_the_full_logits_path(build, num_items):
    model, batch = build(), padded_batch()
    assert (batch["labels"][:, 1:] != -100).sum() == 14  # 7 + 4 + 3 trained next-token positions
    assert unsupported_reason(model) is None
    reference = full_logits_loss(model, batch, num_items)
    result = trained_positions_loss(model, batch, num_items)
    assert result.trained_tokens == 14
    assert result.loss.item() == pytest.approx(reference.item(), rel=1e-6)
    if num_items == 40:  # an accumulated step's count divides the summed loss, not this batch's own count
        assert result.loss.item() == pytest.approx(full_logits_loss(model, batch).item() * 14 / 40, rel=1e-6)
    want, count = grads_of(model, reference)
    got, _ = grads_of(model, result.loss)
    assert count > 0
    for name, grad in want.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-7, msg=name)


def test_chunked_positions_with_recomputed_logits_give_the_same_loss_and_gradients(monkeypatch):
    model, batch = lora_model(), padded_batch()
    reference = full_logits_loss(model, batch)
    want, _ = grads_of(model, reference)
    monkeypatch.setattr(trained_positions, "CHUNK_POSITIONS", 4)  # 14 positions: chunks of 4, 4, 4, 2
    result = trained_positions_loss(model, batch)
    assert result.loss.item() == pytest.approx(reference.item(), rel=1e-6)
    got, _ = grads_of(model, result.loss)
    for name, grad in want.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-7, msg=name)


def test_metrics_count_hits_and_entropy_over_trained_positions_only():
    model, batch = lora_model(), padded_batch()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    log_probs = torch.log_softmax(logits[mask].float(), -1)
    result = trained_positions_loss(model, batch)
    assert result.correct == int((logits[mask].argmax(-1) == labels[mask]).sum())
    assert result.entropy_sum == pytest.approx(float(-(log_probs.exp() * log_probs).sum().detach()), rel=1e-5)


def test_an_all_masked_batch_gives_a_zero_loss_that_backpropagates():
    model, batch = lora_model(), padded_batch()
    batch["labels"][:] = -100
    result = trained_positions_loss(model, batch)
    assert result.trained_tokens == 0 and result.loss.item() == 0.0
    result.loss.backward()  # must not raise: the zero stays attached to the graph


def test_refuses_models_where_it_would_not_be_the_same_computation():
    from peft import PromptTuningConfig, get_peft_model

    assert "trained" in unsupported_reason(build_tiny_model())  # full fine-tuning trains the (tied) LM head
    assert "adapts the LM head" in unsupported_reason(lora_model(("q_proj", "lm_head")))
    prompt = get_peft_model(build_tiny_model(), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    assert "virtual tokens" in unsupported_reason(prompt)
    assert "wrapped by" in unsupported_reason(torch.nn.Sequential(frozen_head_model()))


# ---------------------------------------------------------------------------- through the SFT trainer


def train_rows(tokenizer, n=12):
    rows = []
    for i in range(n):
        prompt = tokenizer(f"Question {i}:" + " tell me more" * (i % 4), add_special_tokens=False).input_ids
        answer = tokenizer(" answer" * (1 + (i * 5) % 7) + ".", add_special_tokens=False).input_ids
        rows.append({"input_ids": prompt + answer, "assistant_masks": [0] * len(prompt) + [1] * len(answer)})
    return rows


def train(tmp_path, tokenizer, model, *, trained_positions_on: bool, **training):
    from transformers import TrainerCallback

    from tuneforge.config.schema import RunConfig
    from tuneforge.objectives import get_objective

    class Log(TrainerCallback):
        losses = {}

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses[state.global_step] = (logs["loss"], logs["grad_norm"], logs.get("mean_token_accuracy"))

    settings = {"batch_size": 4, "batching": "padded", "learning_rate": 1e-2, "warmup_ratio": 0.0,
                "lr_scheduler": "constant", "save_every_steps": 1000, "seed": 11, "max_steps": 3,
                "loss_at_trained_positions": trained_positions_on, **training}
    cfg = RunConfig(data={"train": "unused.jsonl", "max_length": 64}, method={"name": "lora"}, training=settings)
    log = Log()
    log.losses = {}
    trainer = get_objective(cfg.objective).build_trainer(
        cfg, model, tokenizer, SimpleNamespace(rendered={"train": train_rows(tokenizer)}), tmp_path, [log])
    trainer.train()
    return trainer, log.losses


def test_lora_training_follows_the_reference_path(tmp_path, tokenizer):
    torch.set_num_threads(1)
    fast, fast_log = train(tmp_path / "fast", tokenizer, lora_model(), trained_positions_on=True,
                           gradient_accumulation_steps=2)
    ref, ref_log = train(tmp_path / "ref", tokenizer, lora_model(), trained_positions_on=False,
                         gradient_accumulation_steps=2)
    assert type(fast).__name__ == "TrainedPositionsSFTTrainer" and fast.fallback_reason is None
    assert type(ref).__name__ == "SFTTrainer"
    assert sorted(fast_log) == sorted(ref_log) == [1, 2, 3]
    for step, (loss, grad_norm, accuracy) in ref_log.items():
        assert fast_log[step][0] == pytest.approx(loss, rel=1e-4), step
        assert fast_log[step][1] == pytest.approx(grad_norm, rel=1e-3), step
        assert fast_log[step][2] == pytest.approx(accuracy, abs=1e-6), step
    assert ref_log[3][0] < ref_log[1][0]  # lr 1e-2: the loss really moved, so equal trajectories mean something
    ref_state = ref.model.state_dict()
    for key, tensor in fast.model.state_dict().items():
        if "lora_" in key:
            torch.testing.assert_close(tensor, ref_state[key], rtol=1e-3, atol=1e-5, msg=key)


def test_a_trained_lm_head_takes_the_reference_path(tmp_path, tokenizer):
    torch.set_num_threads(1)
    trainer, losses = train(tmp_path, tokenizer, build_tiny_model(), trained_positions_on=True, max_steps=1)
    assert "trained" in trainer.fallback_reason and sorted(losses) == [1]


def test_bf16_autocast_and_partial_checkpointing_reach_the_trained_positions_path(tmp_path, tokenizer):
    """training.mixed_precision=bf16 must autocast the decoder the trained-positions loss calls directly (accelerate
    only wraps the model's forward), and gradient_checkpointing_every_n_layers=2 must checkpoint every other block;
    the loss trajectory stays within bf16 rounding of the reference path's under the same settings."""
    torch.set_num_threads(1)
    seen = []

    def watch(model):
        model.get_base_model().model.layers[0].mlp.down_proj.register_forward_hook(
            lambda module, args, out: seen.append(out.dtype))
        return model

    lean = {"mixed_precision": "bf16", "gradient_checkpointing": True, "gradient_checkpointing_every_n_layers": 2}
    fast, fast_log = train(tmp_path / "fast", tokenizer, watch(lora_model()), trained_positions_on=True, **lean)
    assert fast.fallback_reason is None and seen and set(seen) == {torch.bfloat16}
    layers = fast.model.get_base_model().model.layers
    assert [layer.gradient_checkpointing for layer in layers] == [i % 2 == 0 for i in range(len(layers))]
    ref, ref_log = train(tmp_path / "ref", tokenizer, lora_model(), trained_positions_on=False, **lean)
    for step, (loss, _, _) in ref_log.items():
        assert fast_log[step][0] == pytest.approx(loss, rel=2e-2), step


def test_a_frozen_base_held_in_bf16_trains_like_the_float32_one(tmp_path, tokenizer):
    """training.frozen_base_dtype=bfloat16 (the quickstart's `auto` on a CPU with AVX512-BF16): the LoRA adapter stays
    float32 and the loss trajectory stays within bf16 rounding of the all-float32 reference path's."""
    from tuneforge.train.frozen_dtype import cast_frozen

    torch.set_num_threads(1)
    held = lora_model()
    assert cast_frozen(held, torch.bfloat16) > 0
    lean = {"frozen_base_dtype": "bfloat16", "mixed_precision": "bf16", "gradient_checkpointing": True,
            "gradient_checkpointing_every_n_layers": 2}
    fast, fast_log = train(tmp_path / "held", tokenizer, held, trained_positions_on=True, **lean)
    assert fast.fallback_reason is None
    assert {p.dtype for p in fast.model.parameters() if p.requires_grad} == {torch.float32}
    assert {p.dtype for p in fast.model.parameters() if not p.requires_grad} == {torch.bfloat16}
    ref, ref_log = train(tmp_path / "ref", tokenizer, lora_model(), trained_positions_on=False)
    assert ref_log[3][0] < ref_log[1][0]
    for step, (loss, _, _) in ref_log.items():
        assert fast_log[step][0] == pytest.approx(loss, rel=5e-2), step
