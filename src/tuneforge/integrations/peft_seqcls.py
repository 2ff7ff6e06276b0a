"""PEFT's causal-LM wrapper on a sequence-classification model (the reward objective's score-head model).

Upstream behaviour worked around (peft 0.21): `PeftModelForCausalLM.__init__` reads
`base_model.prepare_inputs_for_generation`, which `*ForSequenceClassification` models do not have, so wrapping a
reward model with the method's CAUSAL_LM task type raises AttributeError. Its forward passes input_ids and
attention_mask through unchanged, so lending the backbone LM's (never called) generation hook is enough.
The proper fix is for methods to choose TaskType.SEQ_CLS (+ modules_to_save=["score"]) for classifiers.
"""
from __future__ import annotations


def lend_generation_hook(classifier, causal_lm) -> None:
    classifier.prepare_inputs_for_generation = causal_lm.prepare_inputs_for_generation
