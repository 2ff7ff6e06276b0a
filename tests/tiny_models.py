"""Tiny random models for fast tests: SmolLM2's real tokenizer (shipped in tests/fixtures) on a 2-layer Llama."""
from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
TOKENIZER_DIR = FIXTURES / "smollm2-tokenizer"


def build_tiny_model(seed: int = 0):
    """A 2-layer Llama with SmolLM2's vocabulary; random weights, builds in well under a second."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    return LlamaForCausalLM(config)


def build_chatty_model():
    """The tiny model with its layer matrices redrawn at std 0.2: at the default init the residual stream is the
    embedding and every prompt just repeats its last token, which would make answer comparisons trivially equal."""
    import torch

    model = build_tiny_model()
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.model.layers.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0, 0.2)
    return model
