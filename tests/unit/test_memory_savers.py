"""Memory savers: gradient checkpointing changes nothing but memory; 8-bit optimizers are real or refused clearly."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from tests.conftest import build_tiny_model
from tests.unit.test_equivalence_accumulation import rows_of_varied_length, run_config, train_sft
from tuneforge.errors import ConfigError


def _loss_and_grads(model, batch):
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tokenizer):
    torch.set_num_threads(1)
    batch = tokenizer(["one short text", "a somewhat longer text to pad the other one"], return_tensors="pt",
                      padding=True)
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model = build_tiny_model()
    model.train()
    loss, grads = _loss_and_grads(model, batch)
    # The options `scale_out_arguments` hands the Trainer (non-reentrant checkpointing).
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert model.is_gradient_checkpointing
    loss_ckpt, grads_ckpt = _loss_and_grads(model, batch)
    assert loss_ckpt == pytest.approx(loss, rel=1e-6)
    assert grads.keys() == grads_ckpt.keys() and len(grads) > 10
    for name, grad in grads.items():
        assert torch.allclose(grads_ckpt[name], grad, atol=1e-6, rtol=1e-5), name


def test_gradient_checkpointing_option_trains_identically_through_the_trainer(tmp_path, tokenizer):
    torch.set_num_threads(1)
    rows = rows_of_varied_length(tokenizer, 8)
    plain, plain_losses = train_sft(tmp_path / "a", tokenizer, rows, run_config(max_steps=2, batch_size=4))
    ckpt, ckpt_losses = train_sft(tmp_path / "b", tokenizer, rows,
                                  run_config(max_steps=2, batch_size=4, gradient_checkpointing=True))
    assert ckpt.model.is_gradient_checkpointing and not plain.model.is_gradient_checkpointing
    for step, (loss, grad_norm) in plain_losses.items():
        assert ckpt_losses[step][0] == pytest.approx(loss, rel=1e-5)
        assert ckpt_losses[step][1] == pytest.approx(grad_norm, rel=1e-4)


def test_scale_out_arguments_map_the_options():
    from tuneforge.config.schema import TrainingConfig
    from tuneforge.train.launch import scale_out_arguments

    args = scale_out_arguments(TrainingConfig(gradient_checkpointing=True, optimizer="adamw_8bit"), world_size=2)
    assert args["gradient_checkpointing"] is True
    assert args["gradient_checkpointing_kwargs"] == {"use_reentrant": False, "every_n_layers": 1}
    partial = TrainingConfig(gradient_checkpointing=True, gradient_checkpointing_every_n_layers=3)
    assert scale_out_arguments(partial)["gradient_checkpointing_kwargs"]["every_n_layers"] == 3
    assert args["optim"] == "adamw_bnb_8bit" and args["ddp_find_unused_parameters"] is False
    assert scale_out_arguments(TrainingConfig(optimizer="paged_adamw_8bit"))["optim"] == "paged_adamw_8bit"
    plain = scale_out_arguments(TrainingConfig())
    assert plain["optim"] == "adamw_torch" and plain["ddp_find_unused_parameters"] is None


def test_8bit_optimizer_without_bitsandbytes_is_a_clear_error(monkeypatch):
    from tuneforge.config.schema import TrainingConfig
    from tuneforge.train import launch

    monkeypatch.setattr(launch, "_package_available", lambda name: name != "bitsandbytes")
    with pytest.raises(ConfigError, match="needs bitsandbytes") as caught:
        launch.preflight(TrainingConfig(optimizer="adamw_8bit"))
    assert "training.optimizer=adamw_torch" in caught.value.hint
    launch.preflight(TrainingConfig())  # the default needs nothing extra


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")
def test_8bit_optimizer_trains_with_8bit_state(tmp_path, tokenizer):
    torch.set_num_threads(1)
    trainer, losses = train_sft(tmp_path, tokenizer, rows_of_varied_length(tokenizer, 8),
                                run_config(max_steps=2, batch_size=4, optimizer="adamw_8bit"))
    optimizer = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    assert type(optimizer).__module__.startswith("bitsandbytes")
    # Large tensors keep their Adam moments in uint8 (bitsandbytes leaves tiny ones, < 4096 values, in fp32).
    states = [s for s in optimizer.state.values() if "state1" in s]
    assert any(s["state1"].dtype == torch.uint8 for s in states)
    assert all(torch.isfinite(torch.tensor(loss)) for loss, _ in losses.values())
