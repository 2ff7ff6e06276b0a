"""Curriculum order: hand-worked orders, base-loss scores, the trainer reading rows in that order, resume reuse."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from tuneforge.config.schema import DataConfig, RunConfig
from tuneforge.errors import DataError
from tuneforge.train import curriculum as cur


def _loaded(tmp_path, rows):
    from tuneforge.data.formats import load_dataset_file

    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_dataset_file(str(path))


def _chat(q, a, **meta):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], **meta}


def test_order_is_ascending_for_easy_first_descending_for_hard_first_ties_in_file_order():
    scores = [3.0, 1.0, 2.0, 1.0, 5.0]
    assert cur.curriculum_order(scores, "easy_first") == [1, 3, 2, 0, 4]
    assert cur.curriculum_order(scores, "hard_first") == [4, 0, 2, 1, 3]


def test_length_and_field_scores(tmp_path):
    loaded = _loaded(tmp_path, [_chat("a", "b", grade=3), _chat("c", "d", grade=1.5)])
    rendered = [{"input_ids": [1, 2, 3], "assistant_masks": [0, 1, 1]}, {"input_ids": [1], "assistant_masks": [1]}]
    assert cur.difficulty_scores("length", rendered, loaded) == [3.0, 1.0]
    assert cur.difficulty_scores("field:grade", rendered, loaded) == [3.0, 1.5]


def test_non_numeric_field_is_an_error_naming_file_and_line(tmp_path):
    loaded = _loaded(tmp_path, [_chat("a", "b", grade=3), _chat("c", "d", grade="hard"), _chat("e", "f")])
    with pytest.raises(DataError) as info:
        cur.field_scores(loaded, "grade")
    assert f"{loaded.path}:2: meta.grade: 'hard' is not a (finite) number" in info.value.message
    assert f"{loaded.path}:3: meta.grade: missing" in info.value.message


def test_config_refuses_packed_batching_other_objectives_and_unknown_measures():
    base = {"data": {"train": "t.jsonl", "order": "curriculum"}}
    RunConfig.model_validate(base)
    with pytest.raises(ValueError, match="packing regroups"):
        RunConfig.model_validate({**base, "training": {"batching": "packed"}})
    with pytest.raises(ValueError, match="objective dpo"):
        RunConfig.model_validate({**base, "objective": {"name": "dpo"}})
    with pytest.raises(ValueError, match="length, base_loss or field:NAME"):
        DataConfig(train="t.jsonl", difficulty="loss")


def test_base_loss_is_the_per_row_eval_loss_and_the_trainer_reads_rows_in_that_order(tmp_path, tokenizer):
    from tests.tiny_models import build_tiny_model
    from tuneforge.eval.loss import eval_loss
    from tuneforge.objectives import get_objective
    from tuneforge.train.data_prep import prepare_data

    rows = [_chat(f"Question {i}?" + " filler" * (i % 3), ["yes", "no", "maybe so", "it depends"][i % 4])
            for i in range(6)]
    loaded = _loaded(tmp_path, rows)
    cfg = RunConfig.model_validate({
        "data": {"train": loaded.path, "order": "curriculum", "difficulty": "base_loss", "max_length": 64},
        "training": {"batch_size": 2, "max_steps": 3},
        "output": {"dir": str(tmp_path / "runs")}})
    prepared = prepare_data(cfg.data, tokenizer)
    original = list(prepared.rendered["train"])
    model = build_tiny_model()
    console = SimpleNamespace(print=lambda *a, **k: None)
    entry = cur.apply_curriculum(tmp_path, cfg.data, prepared, model, batch_size=2, write=True, console=console)
    assert entry == {"order": "curriculum", "difficulty": "base_loss", "direction": "easy_first",
                     "file": "data_order.json", "rows": 6, "reused": False}

    record = json.loads((tmp_path / "data_order.json").read_text())
    expected = [eval_loss(model, [r], progress=False)["loss"] for r in original]
    by_index = {row["index"]: row["difficulty"] for row in record["rows"]}
    assert [by_index[i] for i in range(6)] == pytest.approx(expected, rel=1e-5)
    order = [row["index"] for row in record["rows"]]
    assert order == sorted(range(6), key=lambda i: expected[i])
    assert record["rows"][0]["where"] == f"{loaded.path}:{order[0] + 1}"
    assert prepared.rendered["train"] == [original[i] for i in order]

    trainer = get_objective(cfg.objective).build_trainer(cfg, model, tokenizer, prepared, tmp_path / "ck", [])
    assert trainer.args.train_sampling_strategy == "sequential"
    seen = []
    for batch in trainer.get_train_dataloader():  # unpadded token ids of every row, in the order trained
        seen += [[t for t, m in zip(ids, mask) if m]
                 for ids, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist())]
    assert seen == [original[i]["input_ids"] for i in order]


def test_resume_reuses_the_recorded_order_and_refuses_one_for_other_data(tmp_path, tokenizer):
    from tests.tiny_models import build_tiny_model
    from tuneforge.train.data_prep import prepare_data

    loaded = _loaded(tmp_path, [_chat(f"Q{i}" + " x" * i, "A" * (6 - i)) for i in range(5)])
    data_cfg = DataConfig(train=loaded.path, order="curriculum", difficulty="base_loss", max_length=64)
    console = SimpleNamespace(print=lambda *a, **k: None)
    first = prepare_data(data_cfg, tokenizer)
    cur.apply_curriculum(tmp_path, data_cfg, first, build_tiny_model(seed=0), batch_size=2, write=True,
                         console=console)
    # A resumed run's model is no longer the base: the order must come from the file, not from new scores.
    trained = build_tiny_model(seed=1)
    with torch.no_grad():
        for p in trained.parameters():
            p.mul_(3.0)
    again = prepare_data(data_cfg, tokenizer)
    entry = cur.apply_curriculum(tmp_path, data_cfg, again, trained, batch_size=2, write=True, console=console)
    assert entry["reused"] is True and again.rendered["train"] == first.rendered["train"]

    other = DataConfig(train=loaded.path, order="curriculum", difficulty="length", max_length=64)
    with pytest.raises(DataError, match="another difficulty measure"):
        cur.apply_curriculum(tmp_path, other, prepare_data(other, tokenizer), trained, batch_size=2, write=True,
                             console=console)
