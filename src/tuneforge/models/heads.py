"""Where a causal LM's logits come from: a decoder body and a plain linear LM head, when the model is that simple.

Scoring a few positions (the assistant's answer, a label) does not need the logits of every position: the decoder's
hidden states at those positions through the LM head give the same numbers. Training (train/trained_positions.py)
and scoring (models/inference.py: eval loss, label and reference log-probs) both take the head apart only for the
model classes read to be `logits = lm_head(decoder(...).last_hidden_state)` exactly, and use the model's own
forward for every other model.
"""
from __future__ import annotations

#: Scored positions whose fp32 logits are held at once when scoring (512 x 49,152 x 4 B = 100 MB).
SCORE_CHUNK_POSITIONS = 512
#: Trained positions whose logits the training loss holds at once; above this the logits of each chunk are
#: recomputed in the backward pass instead of being kept (1,024 x 49,152 fp32 logits are 200 MB).
TRAINING_CHUNK_POSITIONS = 1024

#: Causal-LM classes whose forward is exactly `logits = lm_head(decoder(...).last_hidden_state)` followed by the
#: shifted token cross-entropy (no logit scaling, soft-capping or extra terms): read in transformers 5.23's sources.
PLAIN_HEAD_MODELS = frozenset({"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"})


def causal_lm(model):
    """(the causal LM inside `model` whose head can be taken apart, None) or (None, why not)."""
    from transformers import PreTrainedModel

    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        PeftModel = ()
    if PeftModel and isinstance(model, PeftModel):
        config = model.active_peft_config
        if config.is_prompt_learning:
            return None, f"{config.peft_type} adds virtual tokens in the PEFT wrapper's forward"
        return model.get_base_model(), None
    if isinstance(model, PreTrainedModel):
        return model, None
    # DDP/FSDP/DeepSpeed wrappers synchronise gradients through their own forward, which must not be bypassed.
    return None, f"the model is wrapped by {type(model).__name__}"


def plain_head_reason(model) -> str | None:
    """None when `model`'s logits are exactly `lm_head(decoder(...).last_hidden_state)`, else why not."""
    base, reason = causal_lm(model)
    if reason:
        return reason
    if type(base).__name__ not in PLAIN_HEAD_MODELS:
        return f"{type(base).__name__} is not among the model classes with a plain LM head"
    import torch

    head, embeddings = base.get_output_embeddings(), base.get_input_embeddings()
    if type(head) is not torch.nn.Linear or type(embeddings) is not torch.nn.Embedding:
        return "the method adapts the LM head or the embeddings"
    return None


def decoder_and_head(model):
    """(decoder body, LM head) of a model with a plain head (`plain_head_reason` is None), else None."""
    if plain_head_reason(model) is not None:
        return None
    base, _ = causal_lm(model)
    return base.get_decoder(), base.get_output_embeddings()
