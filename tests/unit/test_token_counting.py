"""The manifest's token counts cover exactly the batches that were trained on: not evaluation batches, not the
batch the dataloader prefetches, and every gradient-accumulation micro-batch once."""
from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer
from typer.testing import CliRunner

from tuneforge.cli.main import app

TRAIN_ROWS, BATCH, ACCUMULATION = 12, 2, 2


def _rows(n: int, offset: int) -> list[dict]:
    rows = []
    for i in range(offset, offset + n):
        padding = " Please answer briefly." * (i % 5)  # different lengths, so batches carry padding
        rows.append({"messages": [{"role": "user", "content": f"What is {i} plus {i}?{padding}"},
                                  {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]})
    return rows


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("batching", ["length_grouped", "packed"])
def test_real_tokens_count_only_the_trained_batches(tmp_path, tiny_model_dir, batching):
    train_rows = _rows(TRAIN_ROWS, 0)
    train = _write(tmp_path / "train.jsonl", train_rows)
    validation = _write(tmp_path / "validation.jsonl", _rows(6, 100))
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {{source: {tiny_model_dir}}}\n"
        f"data: {{train: {train}, validation: {validation}, max_length: 128}}\n"
        # Exactly one epoch: every training row is trained on once, whatever the batches look like.
        f"training: {{epochs: 1, batch_size: {BATCH}, gradient_accumulation_steps: {ACCUMULATION},\n"
        f"           batching: {batching}, eval_every_steps: 1, save_every_steps: 100, learning_rate: 1.0e-3}}\n"
        "eval: {compare_base: false}\n"
        "export: {adapter: false, merged: false}\n"
        f"output: {{dir: {tmp_path / 'runs'}, name: counted}}\n"
    )
    result = CliRunner().invoke(app, ["train", str(config)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    run = tmp_path / "runs" / "counted"
    manifest = json.loads((run / "manifest.json").read_text())
    training = manifest["training"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert training["steps"] > 1
    assert [r["step"] for r in records if "eval_loss" in r] == list(range(1, training["steps"] + 1))  # every step

    # Independently: one epoch trains every row once; a row's real tokens are its chat-template tokens.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    lengths = [len(tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"])
               for row in train_rows]
    assert max(lengths) <= 128  # nothing truncated
    assert training["real_tokens"] == sum(lengths)
    assert 0 < training["trained_tokens"] < training["real_tokens"]  # assistant turns only
    # The console says what batch_size counts: with packing, packed rows (each holding several examples).
    unit = "packed rows" if batching == "packed" else "examples"
    assert f"batches {BATCH} {unit} per device" in result.output
    assert f"x {ACCUMULATION} accumulation x 1 process = {BATCH * ACCUMULATION} {unit} per optimizer step" \
        in result.output
    # Padding is measured on the same batches; packed batches are padding-free.
    if batching == "packed":
        assert training["padding_share"] == 0.0
    else:
        assert 0.0 < training["padding_share"] < 0.5  # rows of different lengths share batches
    # The rate is over the training time: the evaluation at every step and the checkpoints are left out of it.
    assert 0 < training["training_s"] < manifest["timings"]["train_s"]
    assert training["tokens_per_second"] == pytest.approx(training["real_tokens"] / training["training_s"], rel=0.02)


def test_the_training_clock_leaves_out_evaluations_and_saves(monkeypatch):
    from tuneforge.train import callbacks

    now = [0.0]
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: now[0])
    clock = callbacks.TrainingClock()

    def at(t, hook):
        now[0] = t
        getattr(clock, hook)(None, None, None)

    at(0.0, "on_train_begin")
    at(1.0, "on_step_end")      # step 1 trained in 1 s
    at(3.0, "on_evaluate")      # a 2 s evaluation
    at(4.5, "on_save")          # a 1.5 s checkpoint
    at(6.5, "on_step_end")      # step 2 trained in 2 s
    now[0] = 7.0
    assert clock.training_seconds() == pytest.approx(3.5)  # while training: up to now
    at(8.0, "on_step_end")      # step 3 in 1.5 s
    at(9.0, "on_evaluate")      # the final evaluation
    at(9.0, "on_train_end")
    assert clock.training_seconds() == pytest.approx(4.5)
    at(20.0, "on_evaluate")     # an evaluation after train() is not the loop's
    assert clock.training_seconds() == pytest.approx(4.5)
