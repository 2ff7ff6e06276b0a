"""eval_loss against a cross-entropy computed by hand, one example at a time, with no padding."""
from __future__ import annotations

import math

import pytest
import torch

from tuneforge.eval.loss import eval_loss

EXAMPLES = [
    {"input_ids": [1, 40, 41, 42, 43, 44, 2], "assistant_masks": [0, 0, 0, 1, 1, 1, 1]},
    {"input_ids": [1, 50, 51], "assistant_masks": [0, 1, 1]},
    {"input_ids": [1, 60, 61, 62, 63], "assistant_masks": [0, 0, 1, 0, 1]},
    {"input_ids": [1, 70], "assistant_masks": [0, 0]},
]


def _token_nll(model, ids: list[int], position: int) -> float:
    """-log p(ids[position] | ids[:position]) from a forward over the unpadded example."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    return -torch.log_softmax(logits[position - 1].float(), dim=-1)[ids[position]].item()


def _manual(model, examples) -> tuple[float, int]:
    total, count = 0.0, 0
    for example in examples:
        for position, flag in enumerate(example["assistant_masks"]):
            if flag and position > 0:
                total += _token_nll(model, example["input_ids"], position)
                count += 1
    return total / count, count


def test_matches_manual_cross_entropy_for_any_batch_size(tiny_model):
    expected_loss, expected_tokens = _manual(tiny_model, EXAMPLES)
    assert expected_tokens == 4 + 2 + 2
    for batch_size in (1, 3, 8):
        result = eval_loss(tiny_model, EXAMPLES, batch_size=batch_size, progress=False)
        assert result["tokens"] == expected_tokens
        assert result["loss"] == pytest.approx(expected_loss, abs=1e-5)
        assert result["perplexity"] == pytest.approx(math.exp(expected_loss), rel=1e-5)


def test_one_masked_token_is_scored_from_the_previous_position(tiny_model):
    ids = [1, 40, 41, 42, 43]
    result = eval_loss(tiny_model, [{"input_ids": ids, "assistant_masks": [0, 0, 0, 1, 0]}], progress=False)
    shifted = _token_nll(tiny_model, ids, 3)
    with torch.no_grad():
        logits = tiny_model(input_ids=torch.tensor([ids])).logits[0]
    unshifted = -torch.log_softmax(logits[3], dim=-1)[ids[3]].item()
    assert result["tokens"] == 1
    assert result["loss"] == pytest.approx(shifted, abs=1e-5)
    assert abs(shifted - unshifted) > 1e-3, "the test must be able to tell a shift error apart"


def test_unmasked_tokens_do_not_count(tiny_model):
    base = {"input_ids": [1, 40, 41, 42], "assistant_masks": [0, 0, 1, 1]}
    # Changing the token after the last loss token, which is unmasked, cannot change the loss.
    longer = {"input_ids": [1, 40, 41, 42, 999], "assistant_masks": [0, 0, 1, 1, 0]}
    assert eval_loss(tiny_model, [base], progress=False)["loss"] == pytest.approx(
        eval_loss(tiny_model, [longer], progress=False)["loss"], abs=1e-6
    )


def test_accepts_tensors_restores_mode_and_rejects_bad_input(tiny_model):
    tiny_model.train()
    tensor_example = {"input_ids": torch.tensor([1, 50, 51]), "assistant_masks": torch.tensor([0, 1, 1])}
    as_lists = eval_loss(tiny_model, [EXAMPLES[1]], progress=False)
    assert eval_loss(tiny_model, [tensor_example], progress=True) == pytest.approx(as_lists)
    assert tiny_model.training
    with pytest.raises(ValueError, match="no token carries loss"):
        eval_loss(tiny_model, [EXAMPLES[3]], progress=False)
    with pytest.raises(ValueError, match="3 input_ids but 2 assistant_masks"):
        eval_loss(tiny_model, [{"input_ids": [1, 2, 3], "assistant_masks": [0, 1]}], progress=False)
    with pytest.raises(ValueError, match="assistant_masks"):
        eval_loss(tiny_model, [{"input_ids": [1, 2, 3]}], progress=False)


def test_plain_head_models_score_only_the_masked_positions_in_chunks(tiny_model, monkeypatch):
    """The LM head runs on the scored positions alone (in chunks) and gives the full logits' numbers."""
    import tuneforge.models.inference as inference
    from tuneforge.models.heads import decoder_and_head

    assert decoder_and_head(tiny_model) is not None, "the tiny Llama must take the plain-head path"
    expected_loss, _ = _manual(tiny_model, EXAMPLES)
    calls = []
    head = tiny_model.get_output_embeddings()
    handle = head.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    monkeypatch.setattr(inference, "SCORE_CHUNK_POSITIONS", 3)
    try:
        chunked = eval_loss(tiny_model, EXAMPLES, batch_size=8, progress=False)
    finally:
        handle.remove()
    assert chunked["loss"] == pytest.approx(expected_loss, abs=1e-5)
    assert calls == [3, 3, 2], "8 scored positions, 3 at a time, never the 4 x 7 grid"
    monkeypatch.setattr(inference, "decoder_and_head", lambda model: None)  # the model's own full logits
    assert eval_loss(tiny_model, EXAMPLES, batch_size=8, progress=False)["loss"] == pytest.approx(
        chunked["loss"], abs=1e-6)
