"""PEFT's prompt-learning methods on a sequence-classification model (the reward objective's score-head model).

Upstream behaviour worked around (peft 0.21): `PeftModel.disable_adapter()` for prompt-learning methods (prefix and
prompt tuning) saves and restores `self.prepare_inputs_for_generation` whatever the task type, and
`*ForSequenceClassification` models have no such attribute, so switching the adapter off to score the base raises
UnboundLocalError. A classifier never generates, so lending the backbone LM's (never called) generation hook is
enough. LoRA and IA3 do not need it; it is harmless for them.
"""
from __future__ import annotations


def lend_generation_hook(classifier, causal_lm) -> None:
    classifier.prepare_inputs_for_generation = causal_lm.prepare_inputs_for_generation
