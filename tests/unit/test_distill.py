"""Distillation: the token-level KD loss against hand-worked values (and TRL's GKD loss), the vocabulary check,
sequence-level targets from the teacher's generations (cached), and a tiny run that lowers the KL to a teacher."""
from __future__ import annotations

import json
import math

import pytest
import torch

from tuneforge.config.schema import RunConfig
from tuneforge.objectives.distill_loss import token_distill_loss

LN3 = math.log(3)
# One sequence, vocabulary of 2, labels after the shift: position 0 -> token 0, position 1 -> token 1.
STUDENT = torch.tensor([[[0.0, 0.0], [LN3, 0.0], [5.0, -5.0]]])   # p = (.5, .5), (.75, .25)
TEACHER = torch.tensor([[[LN3, 0.0], [0.0, 0.0], [-5.0, 5.0]]])   # q = (.75, .25), (.5, .5)
LABELS = torch.tensor([[-100, 0, 1]])
KL = [0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5),   # KL(q || p) per position
      0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)]
NLL = [math.log(2), math.log(4)]


def test_kd_loss_mixes_kl_and_cross_entropy_by_hand():
    loss, stats = token_distill_loss(STUDENT, TEACHER, LABELS, temperature=1.0, alpha=0.5)
    assert float(loss) == pytest.approx(sum(0.5 * k + 0.5 * n for k, n in zip(KL, NLL)) / 2)  # 0.58852
    assert stats["kl"] == pytest.approx(sum(KL) / 2) and stats["ce"] == pytest.approx(sum(NLL) / 2)
    # Normalised by the accumulated batch's trained tokens when given (gradient accumulation).
    summed, _ = token_distill_loss(STUDENT, TEACHER, LABELS, alpha=0.5, num_items=4)
    assert float(summed) == pytest.approx(sum(0.5 * k + 0.5 * n for k, n in zip(KL, NLL)) / 4)
    # The last position predicts nothing (no label after it), the first label is never predicted.
    assert float(token_distill_loss(STUDENT, STUDENT, LABELS, alpha=1.0)[0]) == pytest.approx(0.0, abs=1e-7)


def test_kd_loss_temperature_and_label_smoothing_by_hand():
    # T = 2: student (1/2, 1/2) and (sqrt3, 1)/(1 + sqrt3); teacher (sqrt3, 1)/(1 + sqrt3) and (1/2, 1/2).
    r = math.sqrt(3) / (1 + math.sqrt(3))
    kl_t = [r * math.log(r / 0.5) + (1 - r) * math.log((1 - r) / 0.5),
            0.5 * math.log(0.5 / r) + 0.5 * math.log(0.5 / (1 - r))]
    loss, _ = token_distill_loss(STUDENT, TEACHER, LABELS, temperature=2.0, alpha=1.0)
    assert float(loss) == pytest.approx(4 * sum(kl_t) / 2)  # x T^2
    # eps = 0.1, hard labels only: (1 - eps) NLL + eps x mean over the vocabulary of -log p
    smoothed = [0.9 * math.log(2) + 0.1 * math.log(2),
                0.9 * math.log(4) + 0.1 * (-(math.log(0.75) + math.log(0.25)) / 2)]
    loss, _ = token_distill_loss(STUDENT, TEACHER, LABELS, alpha=0.0, label_smoothing=0.1)
    assert float(loss) == pytest.approx(sum(smoothed) / 2)  # 1.01226


def test_kd_loss_matches_trl_gkd_forward_kl():
    gkd = pytest.importorskip("trl.experimental.gkd.gkd_trainer")
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 6, 11), torch.randn(2, 6, 11)
    labels = torch.randint(0, 11, (2, 6))
    labels[0, :3] = -100
    ours, _ = token_distill_loss(student, teacher, labels, temperature=1.5, alpha=1.0)
    theirs = gkd.GKDTrainer.generalized_jsd_loss(student[:, :-1], teacher[:, :-1], labels[:, 1:], beta=0.0,
                                                 temperature=1.5)  # beta 0: KL(teacher || student)
    assert float(ours) == pytest.approx(1.5 ** 2 * float(theirs), rel=1e-5)


def _write_rows(path, fmt="chat", n=4):
    if fmt == "chat":
        rows = [{"messages": [{"role": "user", "content": f"Say a colour number {i}."},
                              {"role": "assistant", "content": "Blue." if i % 2 else "Red, I think."}]}
                for i in range(n)]
    else:
        rows = [{"prompt": f"Colour number {i} is", "completion": " blue."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(tmp_path, train, teacher, mode, **distill):
    return RunConfig.model_validate({
        "model": {"source": str(teacher)},
        "data": {"train": str(train), "max_length": 64},
        "method": {"name": "full"},
        "objective": {"name": "distill", "distill": {"teacher": str(teacher), "mode": mode, **distill}},
        "training": {"max_steps": 8, "batch_size": 4, "learning_rate": 3e-3, "warmup_ratio": 0.0,
                     "lr_scheduler": "constant", "logging_steps": 1, "batching": "padded"},
        "output": {"dir": str(tmp_path / "runs")},
    })


def test_config_needs_a_teacher(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs objective.distill.teacher"):
        RunConfig.model_validate({"data": {"train": "x.jsonl"}, "objective": {"name": "distill"}})


@pytest.mark.parametrize("fmt", ["chat", "prompt_completion"])
def test_sequence_mode_trains_on_the_teachers_cached_answers(tmp_path, tiny_model_dir, tokenizer, monkeypatch, fmt):
    from tuneforge.models.inference import InferenceEngine
    from tuneforge.objectives import get_objective

    cfg = _config(tmp_path, _write_rows(tmp_path / "train.jsonl", fmt), tiny_model_dir, "sequence", max_new_tokens=6)
    objective = get_objective(cfg.objective)
    objective.run_dir = tmp_path / "run"
    prepared = objective.prepare(cfg, tokenizer)
    rows = prepared.splits["train"].rows

    teacher = InferenceEngine.from_ref(objective.teacher_ref(cfg))
    chat = fmt == "chat"
    asked = [{"messages": r["messages"][:-1]} if chat else {"prompt": r["prompt"]} for r in rows]
    expected = [c.text for c in teacher.generate(asked, max_new_tokens=6, progress=False)]
    assert [r["messages"][-1]["content"] if chat else r["completion"] for r in rows] == expected
    assert (rows[0]["messages"][0]["content"] if chat else rows[0]["prompt"]) == (
        "Say a colour number 0." if chat else "Colour number 0 is")  # prompts untouched
    assert prepared.stats["train"]["teacher_answers"]["generated"] == 4
    cache = objective.run_dir / "distill" / "teacher_answers.jsonl"
    assert [json.loads(line)["text"] for line in cache.read_text().splitlines()] == expected

    def no_generation(*args, **kwargs):
        raise AssertionError("the cached answers should have been used")

    monkeypatch.setattr(InferenceEngine, "generate", no_generation)
    again = get_objective(cfg.objective)
    again.run_dir = objective.run_dir
    prepared_again = again.prepare(cfg, tokenizer)
    assert prepared_again.stats["train"]["teacher_answers"]["cached"] == 4
    assert prepared_again.rendered["train"] == prepared.rendered["train"]


def test_token_mode_refuses_a_teacher_with_another_vocabulary(tmp_path, tiny_model_dir, tokenizer):
    from transformers import AutoTokenizer

    from tuneforge.errors import ConfigError
    from tuneforge.objectives import get_objective

    other = AutoTokenizer.from_pretrained(tiny_model_dir)
    other.add_tokens(["<only-in-teacher>"])
    other.save_pretrained(tiny_model_dir)
    cfg = _config(tmp_path, _write_rows(tmp_path / "train.jsonl"), tiny_model_dir, "token")
    with pytest.raises(ConfigError, match="tokenizer is not the student's .*<only-in-teacher>"):
        get_objective(cfg.objective).prepare(cfg, tokenizer)


def test_token_mode_tiny_run_lowers_the_kl_to_the_teacher(tmp_path, tiny_model_dir, tokenizer):
    from tests.tiny_models import build_tiny_model
    from tuneforge.methods import get_method
    from tuneforge.objectives import get_objective

    teacher_dir = tmp_path / "teacher"
    build_tiny_model(seed=1).save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    cfg = _config(tmp_path, _write_rows(tmp_path / "train.jsonl"), teacher_dir, "token", alpha=1.0)
    objective = get_objective(cfg.objective)
    prepared = objective.prepare(cfg, tokenizer)
    model = get_method(cfg.method).apply(build_tiny_model(seed=0))
    trainer = objective.build_trainer(cfg, model, tokenizer, prepared, tmp_path / "ckpt", [])
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])

    def kl() -> float:
        with torch.no_grad():
            student = model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            teacher = trainer.teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return token_distill_loss(student, teacher, batch["labels"], alpha=1.0)[1]["kl"]

    before = kl()
    trainer.train()
    after = kl()
    logged = [r["distill_kl"] for r in trainer.state.log_history if "distill_kl" in r]
    assert before > 0.01 and after < 0.5 * before, (before, after)
    assert logged and logged[-1] < logged[0]


def test_the_plan_of_a_sequence_distillation_does_not_run_the_teacher(tmp_path, tiny_model_dir, tokenizer,
                                                                       monkeypatch):
    from tuneforge.objectives.distill import DistillObjective
    from tuneforge.plan.workload import measure_workload

    def no_teacher(*args, **kwargs):
        raise AssertionError("the plan must not load or run the teacher")

    monkeypatch.setattr(DistillObjective, "load_teacher", no_teacher)
    cfg = _config(tmp_path, _write_rows(tmp_path / "train.jsonl", "chat"), tiny_model_dir, "sequence",
                  max_new_tokens=6)
    workload = measure_workload(cfg, tokenizer)
    assert workload.examples == 4 and "stand in for the teacher's" in workload.source
