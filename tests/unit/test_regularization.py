"""Staying close to the base: the L2-SP / EWC penalty and its Fisher against hand-worked values, the penalty in a
real trainer's loss, and label smoothing / NEFTune reaching the SFT trainer's loss path."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from tuneforge.config.schema import RunConfig
from tuneforge.integrations.trainer_loss import loss_scaled_for_accumulation
from tuneforge.train.regularization import ProximalPenalty, diagonal_fisher, install_penalty


def toy_linear() -> torch.nn.Linear:
    layer = torch.nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0]]))
        layer.bias.copy_(torch.tensor([0.5]))
    return layer


def test_l2sp_penalty_is_zero_at_start_and_hand_worked_after_a_move():
    layer = toy_linear()
    layer.bias.requires_grad_(False)  # a frozen parameter is not part of the penalty
    penalty = ProximalPenalty(layer, l2sp=0.1)
    assert float(penalty().detach()) == 0.0
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.5, 1.0]]))
        layer.bias.fill_(9.0)
    # 0.1 x ((1.5 - 1)^2 + (1 - 2)^2) = 0.1 x 1.25
    assert float(penalty().detach()) == pytest.approx(0.125)
    penalty().backward()  # d/dw 0.1 (w - w0)^2 = 0.2 (w - w0)
    assert layer.weight.grad[0].tolist() == pytest.approx([0.1, -0.2])


def test_ewc_penalty_weights_each_parameter_by_its_fisher():
    layer = toy_linear()
    fisher = {"weight": torch.tensor([[2.0, 0.5]]), "bias": torch.tensor([4.0])}
    penalty = ProximalPenalty(layer, l2sp=0.1, ewc_weight=0.5, fisher=fisher)
    assert float(penalty().detach()) == 0.0
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, 2.0]]))
        layer.bias.copy_(torch.tensor([0.0]))
    # squared moves: w (1, 0), b 0.25; l2sp 0.1 x 1.25; ewc 0.5 x (2 x 1 + 0.5 x 0 + 4 x 0.25)
    assert float(penalty().detach()) == pytest.approx(0.125 + 1.5)


class SquaredError(torch.nn.Module):
    """loss = 0.5 (w . x - y)^2, so the gradient is (w . x - y) x: easy to square by hand."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([0.5, 0.5]))

    def forward(self, x, y):
        return SimpleNamespace(loss=0.5 * (self.w @ x[0] - y[0]) ** 2)


def test_diagonal_fisher_is_the_mean_squared_per_row_gradient():
    model = SquaredError()
    rows = [{"x": torch.tensor([[1.0, 2.0]]), "y": torch.tensor([1.0])},
            {"x": torch.tensor([[0.0, 1.0]]), "y": torch.tensor([-1.0])}]
    # row 1: residual 0.5 + 1 - 1 = 0.5 -> grad (0.5, 1.0); row 2: residual 0.5 + 1 = 1.5 -> grad (0, 1.5)
    # mean of squares: (0.25 + 0) / 2, (1 + 2.25) / 2 = (0.125, 1.625); normalised by their mean 0.875
    raw = diagonal_fisher(model, rows, progress=False, normalise=False)
    assert raw["w"].tolist() == pytest.approx([0.125, 1.625])
    normalised = diagonal_fisher(model, rows, progress=False)
    assert normalised["w"].tolist() == pytest.approx([0.125 / 0.875, 1.625 / 0.875])
    assert model.w.grad is None  # training starts with clean gradients


def test_accumulation_rule_matches_the_trainer():
    declared = SimpleNamespace(loss_is_scaled_for_ga=False, model_accepts_loss_kwargs=True, compute_loss_func=None)
    assert not loss_scaled_for_accumulation(declared, 10)
    inferred = SimpleNamespace(loss_is_scaled_for_ga=None, model_accepts_loss_kwargs=True, compute_loss_func=None)
    assert loss_scaled_for_accumulation(inferred, 10) and not loss_scaled_for_accumulation(inferred, None)


def _config(tmp_path, method="full", objective="sft", **training):
    return RunConfig.model_validate({
        "data": {"train": "unused.jsonl", "max_length": 64},
        "method": {"name": method, "freeze": {"train_last_n_blocks": 1}},
        "objective": {"name": objective},
        "training": {"max_steps": 2, "batch_size": 2, "learning_rate": 1e-2, "warmup_ratio": 0.0,
                     "lr_scheduler": "constant", "logging_steps": 1, **training},
        "output": {"dir": str(tmp_path)},
    })


@pytest.mark.parametrize(("changes", "message"), [
    ({"method": "lora", "regularization": {"l2sp": 0.1}}, "trains no base weight"),
    ({"objective": "dpo", "label_smoothing": 0.1}, "computes its own loss"),
    ({"objective": "kto", "neftune_noise_alpha": 5.0}, "computes its own loss"),
    ({"regularization": {"ewc": {"weight": 1.0}}, "distributed": "fsdp",
      "distributed_config": "x.json"}, "shards them"),
])
def test_config_refuses_options_where_they_mean_nothing(tmp_path, changes, message):
    from pydantic import ValidationError

    method, objective = changes.pop("method", "full"), changes.pop("objective", "sft")
    with pytest.raises(ValidationError, match=message):
        _config(tmp_path, method, objective, **changes)


def _sft_trainer(tmp_path, tokenizer, cfg, callbacks=(), rows=3):
    from tests.tiny_models import build_tiny_model
    from tuneforge.methods import get_method
    from tuneforge.objectives import get_objective
    from tuneforge.train.data_prep import PreparedData

    torch.manual_seed(0)
    examples = []
    for text in ("Ada works at Analytic Engines.", "Grace lives in Arlington now.", "Alan moved to Manchester.")[:rows]:
        ids = tokenizer(text)["input_ids"]
        examples.append({"input_ids": ids, "assistant_masks": [0, 0] + [1] * (len(ids) - 2)})
    prepared = PreparedData(splits={}, rendered={"train": examples}, stats={}, template=None)
    model = get_method(cfg.method).apply(build_tiny_model())
    trainer = get_objective(cfg.objective).build_trainer(cfg, model, tokenizer, prepared, tmp_path / "ckpt",
                                                         list(callbacks))
    return model, trainer


def test_penalty_joins_the_training_loss_of_a_real_trainer(tmp_path, tokenizer):
    cfg = _config(tmp_path, method="freeze", regularization={"l2sp": 10.0})
    model, trainer = _sft_trainer(tmp_path, tokenizer, cfg)
    penalty = ProximalPenalty(model, l2sp=10.0)
    assert all(".layers.1." in name or "norm" in name for name, _ in penalty.params)  # freeze: last block only
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    model.train()
    with torch.no_grad():
        for _, p in penalty.params:
            p.add_(0.01)
    plain = float(trainer.compute_loss(model, dict(batch)).detach())
    install_penalty(trainer, penalty)
    moved = sum(p.numel() for _, p in penalty.params) * 1e-4 * 10.0  # every entry moved by 0.01
    with_penalty = float(trainer.compute_loss(model, dict(batch)).detach())
    assert with_penalty == pytest.approx(plain + moved, rel=1e-3)  # fp32 rounding of (p + 0.01) - p
    assert moved > 0.1 * plain
    model.eval()  # evaluation losses stay the objective's own
    with torch.no_grad():
        assert float(trainer.compute_loss(model, dict(batch))) == pytest.approx(plain, rel=1e-5)


def test_penalty_is_logged_and_holds_weights_closer_to_the_base(tmp_path, tokenizer):
    distances = {}
    for weight in (None, 1000.0):
        cfg = _config(tmp_path / str(weight), max_steps=3, regularization={"l2sp": weight} if weight else {})
        model, trainer = _sft_trainer(tmp_path / str(weight), tokenizer, cfg)
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        if weight:
            install_penalty(trainer, ProximalPenalty(model, l2sp=weight))
        trainer.train()
        distances[weight] = sum(float((p - start[n]).pow(2).sum()) for n, p in model.named_parameters())
        logged = [r.get("regularization_penalty") for r in trainer.state.log_history if "loss" in r]
    assert logged[0] == 0.0 and logged[-1] > 0.0  # zero at the start, then the distance it keeps small
    assert distances[1000.0] < distances[None]


def test_label_smoothing_reaches_the_sft_loss(tmp_path, tokenizer):
    cfg = _config(tmp_path, label_smoothing=0.1)
    model, trainer = _sft_trainer(tmp_path, tokenizer, cfg)
    with torch.no_grad():  # a random model is near-uniform, where smoothing changes little: sharpen it
        model.get_input_embeddings().weight.mul_(30)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    model.train()
    loss = float(trainer.compute_loss(model, dict(batch)).detach())
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    labels = batch["labels"][:, 1:]
    keep = labels != -100
    nll = -logp.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)[keep]
    uniform = -logp.mean(-1)[keep]  # cross-entropy against the uniform distribution
    expected = (0.9 * nll + 0.1 * uniform).mean()
    assert loss == pytest.approx(float(expected), rel=1e-4)
    assert abs(loss - float(nll.mean())) > 0.05


def test_neftune_noises_embeddings_in_training_only(tmp_path, tokenizer):
    from transformers import TrainerCallback

    seen = {}

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            embed = model.get_input_embeddings()
            ids = torch.tensor([[5, 6, 7, 8]])
            clean = embed.weight[ids].detach()
            with torch.no_grad():
                embed.train()
                seen["train"] = float((embed(ids) - clean).abs().max())
                embed.eval()
                seen["eval"] = float((embed(ids) - clean).abs().max())
                embed.train()

    cfg = _config(tmp_path, neftune_noise_alpha=5.0, max_steps=1)
    model, trainer = _sft_trainer(tmp_path, tokenizer, cfg, callbacks=[Probe()])
    assert trainer.args.neftune_noise_alpha == 5.0
    trainer.train()
    bound = 5.0 / math.sqrt(4 * model.config.hidden_size)  # alpha / sqrt(length x hidden)
    assert 0 < seen["train"] <= bound + 1e-6
    assert seen["eval"] == 0.0
    ids = torch.tensor([[5, 6, 7, 8]])
    model.train()  # after training the hook is gone: no noise even in training mode
    assert torch.equal(model.get_input_embeddings()(ids), model.get_input_embeddings().weight[ids])


def test_ewc_fisher_comes_from_the_general_set_answers(tmp_path, tokenizer):
    from tests.tiny_models import build_tiny_model
    from tuneforge.eval.forgetting import general_items
    from tuneforge.train.regularization import build_penalty, general_rows

    model = build_tiny_model()
    cfg = _config(tmp_path, regularization={"ewc": {"weight": 2.0, "n_samples": 3}})
    rows = general_rows(model, tokenizer, None, 3)
    first = general_items()[0]
    answer = tokenizer.decode([t for t, label in zip(rows[0]["input_ids"][0], rows[0]["labels"][0]) if label >= 0])
    assert len(rows) == 3 and answer.startswith(first["reference"])  # loss on the answer, not the question
    penalty = build_penalty(cfg, model, tokenizer)
    assert penalty.ewc_weight == 2.0 and set(penalty.fisher) == {n for n, _ in penalty.params}
    values = torch.cat([f.flatten() for f in penalty.fisher.values()])
    assert float(values.mean()) == pytest.approx(1.0, rel=1e-4) and float(values.max()) > 1.0
    assert float(penalty().detach()) == 0.0


def test_penalty_counts_once_per_step_under_gradient_accumulation(tmp_path, tokenizer):
    """Batch 2 x 1 micro-batch and batch 1 x 2 micro-batches: the same step's gradient, penalty included."""
    from transformers import TrainerCallback

    grads = {}

    class Grab(TrainerCallback):
        def __init__(self, key):
            self.key = key

        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            grads[self.key] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    for batch, accumulation in ((2, 1), (1, 2)):
        cfg = _config(tmp_path / f"{batch}", max_steps=1, batch_size=batch, gradient_accumulation_steps=accumulation,
                      max_grad_norm=1e9, batching="padded", regularization={"l2sp": 10.0})
        grab = Grab((batch, accumulation))
        model, trainer = _sft_trainer(tmp_path / f"{batch}", tokenizer, cfg, callbacks=[grab], rows=2)
        penalty = ProximalPenalty(model, l2sp=10.0)
        install_penalty(trainer, penalty)
        with torch.no_grad():  # away from theta0, so the penalty has a gradient: 2 x 10 x 0.01 per entry
            for _, p in penalty.params:
                p.add_(0.01)
        trainer.train()
    assert torch.allclose(grads[(2, 1)], grads[(1, 2)], atol=1e-5)
    assert float(grads[(2, 1)].abs().max()) > 0.19  # the penalty's 0.2 per entry is in it, once
