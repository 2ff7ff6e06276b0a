"""`training.batching: packed` never lets a token attend across a sample boundary.

Packing (TRL's BFD packing + padding-free collation) concatenates samples into one row without an attention
mask; the only boundary information is `position_ids` restarting at 0. transformers builds a block-diagonal
causal mask from those position ids (sdpa and eager alike); if it ever stopped doing that, samples would
silently see each other. The batch below comes from the trainer's own dataloader, i.e. the exact collator path
that training uses.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tests.conftest import build_tiny_model
from tests.unit.test_equivalence_accumulation import rows_of_varied_length, run_config


def packed_batch_and_model(tmp_path, tokenizer):
    from tuneforge.objectives import get_objective

    cfg = run_config(batching="packed", batch_size=1)
    trainer = get_objective(cfg.objective).build_trainer(
        cfg, build_tiny_model(), tokenizer, SimpleNamespace(rendered={"train": rows_of_varied_length(tokenizer, 4)}),
        tmp_path, [])
    batch = next(iter(trainer.get_train_dataloader()))
    return batch, trainer.model


def segments(position_ids: torch.Tensor) -> list[slice]:
    starts = (position_ids[0] == 0).nonzero().flatten().tolist() + [position_ids.shape[1]]
    return [slice(a, b) for a, b in zip(starts, starts[1:])]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_samples_do_not_attend_to_each_other(tmp_path, tokenizer, attn):
    torch.manual_seed(0)
    batch, model = packed_batch_and_model(tmp_path, tokenizer)
    model.set_attn_implementation(attn)
    model.eval()
    assert "attention_mask" not in batch  # padding-free: boundaries live in position_ids only
    parts = segments(batch["position_ids"])
    assert len(parts) >= 3, "the packed row should hold several samples"

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        changed = batch["input_ids"].clone()
        first = parts[0]
        changed[0, first] = torch.randint(100, 40000, (first.stop - first.start,))
        logits_changed = model(input_ids=changed, position_ids=batch["position_ids"]).logits

    # Changing sample 1 changes sample 1's logits, and no other sample's.
    assert (logits_changed[0, first] - logits[0, first]).abs().max() > 1e-3
    for part in parts[1:]:
        assert torch.allclose(logits_changed[0, part], logits[0, part], atol=1e-5), part

    # Stronger: each packed sample's logits equal those of the sample run on its own.
    with torch.no_grad():
        for part in parts:
            alone = model(input_ids=batch["input_ids"][:, part]).logits
            assert torch.allclose(alone[0], logits[0, part], atol=1e-4), part
