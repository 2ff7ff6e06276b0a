"""A few optimizer steps of LoRA, DoRA and IA3 on the real SmolLM2-135M-Instruct lower eval loss on quickstart rows."""
from __future__ import annotations

import pytest
import torch

from tuneforge.config.schema import DataConfig, MethodConfig
from tuneforge.eval.loss import eval_loss
from tuneforge.methods import get_method
from tuneforge.models.loading import load_tokenizer
from tuneforge.models.sources import ResolvedModel
from tuneforge.train.data_prep import prepare_data

pytestmark = pytest.mark.slow

# Learning rates above the run defaults so that 4 steps move the loss clearly on a handful of rows.
CASES = {
    "lora": ({"name": "lora"}, 1e-3),
    "dora": ({"name": "lora", "lora": {"use_dora": True}}, 1e-3),
    "ia3": ({"name": "ia3"}, 1e-2),
}


@pytest.fixture(scope="module")
def quickstart(real_model_dir):
    resolved = ResolvedModel("smollm2-135m-instruct", "folder", str(real_model_dir), None)
    tokenizer = load_tokenizer(resolved)
    data = DataConfig(train="quickstart:train.jsonl", validation="quickstart:validation.jsonl", max_length=256)
    prepared = prepare_data(data, tokenizer)
    return resolved, prepared.rendered["train"][:16], prepared.rendered["validation"][:8]


def padded(rows, pad_id: int):
    from tuneforge.models.inference import right_pad

    ids, mask, trained = right_pad([(r["input_ids"], r["assistant_masks"]) for r in rows], pad_id)
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.where(trained, ids, -100)}


@pytest.mark.parametrize("case", list(CASES))
def test_few_steps_lower_eval_loss(case, quickstart):
    torch.manual_seed(0)
    resolved, train_rows, eval_rows = quickstart
    spec, lr = CASES[case]
    method = get_method(MethodConfig(**spec))
    model = method.apply(method.load_base(resolved, "float32"))
    before = eval_loss(model, eval_rows, batch_size=8, progress=False)["loss"]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for step in range(4):
        batch = padded(train_rows[4 * step: 4 * step + 4], pad_id=0)
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = eval_loss(model, eval_rows, batch_size=8, progress=False)["loss"]
    print(f"{case}: eval loss {before:.4f} -> {after:.4f}")
    assert after < before - 0.01
