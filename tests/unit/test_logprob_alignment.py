"""Every log-prob scorer reads the logits of the real tokens, also under prompt tuning.

Prompt tuning prepends virtual tokens to the *outputs* too: for T input tokens the model returns n_virtual + T
logit positions. A scorer that takes `logits[:, :-1]` as "the predictions for tokens 1..T-1" then reads virtual
positions for the first n_virtual tokens and misses the last ones - which is what preference log-probs (DPO/ORPO
accuracy and margins) did while only eval loss cut the virtual positions. The shared helper
(`tuneforge.models.inference.shifted_logits`) is what eval loss, preference log-probs and label log-probs use now.
"""
from __future__ import annotations

import pytest
import torch

from tests.tiny_models import build_tiny_model
from tuneforge.eval.loss import eval_loss
from tuneforge.models.inference import InferenceEngine
from tuneforge.objectives.preference import sequence_logps

N_VIRTUAL = 5


@pytest.fixture()
def prompt_tuned():
    from peft import PromptTuningConfig, TaskType, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(build_tiny_model(), PromptTuningConfig(task_type=TaskType.CAUSAL_LM,
                                                                  num_virtual_tokens=N_VIRTUAL))
    with torch.no_grad():  # a trained prompt, not the near-zero init, so a misalignment shows in the numbers
        for parameter in model.prompt_encoder.parameters():
            parameter.normal_(0, 1.0)
    return model.eval()


ROWS = [
    {"input_ids": [5, 17, 230, 41, 9, 77, 12], "assistant_masks": [0, 0, 0, 1, 1, 1, 1]},
    {"input_ids": [8, 300, 21, 4], "assistant_masks": [0, 1, 1, 1]},
]


def _by_hand(model, row) -> tuple[float, int]:
    """One row, no padding, virtual positions cut explicitly: the reference every scorer must reproduce."""
    ids = torch.tensor([row["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
    assert logits.shape[0] == N_VIRTUAL + ids.shape[1]  # the upstream behaviour this guards against
    logp = torch.log_softmax(logits[N_VIRTUAL:].float(), -1)
    picked = [float(logp[t - 1, row["input_ids"][t]]) for t in range(1, len(row["input_ids"]))
              if row["assistant_masks"][t]]
    return sum(picked), len(picked)


def test_preference_logps_skip_virtual_positions(prompt_tuned):
    expected = [_by_hand(prompt_tuned, row)[0] for row in ROWS]
    assert sequence_logps(prompt_tuned, ROWS, batch_size=2) == pytest.approx(expected, abs=1e-4)


def test_eval_loss_skips_virtual_positions(prompt_tuned):
    sums = [_by_hand(prompt_tuned, row) for row in ROWS]
    expected = -sum(s for s, _ in sums) / sum(n for _, n in sums)
    assert eval_loss(prompt_tuned, ROWS, batch_size=2, progress=False)["loss"] == pytest.approx(expected, abs=1e-5)


def test_label_logprobs_skip_virtual_positions(prompt_tuned, tokenizer):
    prompt = [5, 17, 230]
    label_ids = tokenizer("yes", add_special_tokens=False)["input_ids"]
    row = {"input_ids": prompt + label_ids, "assistant_masks": [0] * len(prompt) + [1] * len(label_ids)}
    got = InferenceEngine(prompt_tuned, tokenizer).label_logprobs([prompt], ["yes"])[0]["yes"]
    assert got == pytest.approx(_by_hand(prompt_tuned, row)[0], abs=1e-4)
