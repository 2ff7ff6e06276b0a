"""The GGUF integration: a real (tiny) GGUF file written here and loaded through transformers' GGUF loader.

The tiny file uses a 263-token byte-level BPE vocabulary: transformers parses GGUF token arrays slowly
(SmolLM2's 49k tokens take ~10 s), a small vocabulary keeps every load well under a second.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tuneforge.errors import ModelSourceError
from tuneforge.integrations import gguf as gguf_integration

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (Path(__file__).parents[1] / "fixtures" / "smollm2-tokenizer" / "chat_template.jinja").read_text()


def _byte_alphabet() -> list[str]:
    """The byte-level BPE alphabet: printable bytes map to themselves, the rest to code points from 256 on."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    chars, shifted = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + shifted))
            shifted += 1
    return chars


def write_tiny_gguf(path: Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """A valid llama GGUF (float32 tensors, gpt2-style tokenizer, ChatML template) of a tiny random model."""
    import gguf

    merges = ["h e", "l l", "he ll", "Ġ w"]
    tokens = SPECIALS + _byte_alphabet() + ["he", "ll", "hell", "Ġw"]
    heads, kv_heads, ffn = 4, 2, 2 * hidden
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_file_type(0)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    kv = kv_heads * hidden // heads
    writer.add_tensor("token_embd.weight", weight(len(tokens), hidden))
    for block in range(layers):
        writer.add_tensor(f"blk.{block}.attn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"blk.{block}.ffn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"blk.{block}.attn_q.weight", weight(hidden, hidden))
        writer.add_tensor(f"blk.{block}.attn_k.weight", weight(kv, hidden))
        writer.add_tensor(f"blk.{block}.attn_v.weight", weight(kv, hidden))
        writer.add_tensor(f"blk.{block}.attn_output.weight", weight(hidden, hidden))
        writer.add_tensor(f"blk.{block}.ffn_gate.weight", weight(ffn, hidden))
        writer.add_tensor(f"blk.{block}.ffn_up.weight", weight(ffn, hidden))
        writer.add_tensor(f"blk.{block}.ffn_down.weight", weight(hidden, ffn))
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def test_upstream_quirk_gguf_load_keeps_quantizer_marker_and_refuses_to_save(tiny_gguf, tmp_path):
    """Documents the upstream behaviour the workaround exists for; if this fails, transformers fixed it."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name, dtype=torch.float32)
    assert gguf_integration.has_gguf_quantizer_marker(model)
    with pytest.raises(ValueError, match="not serializable"):
        model.save_pretrained(tmp_path / "refused")


def test_drop_gguf_quantizer_marker_makes_the_model_saveable_with_identical_weights(tiny_gguf, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name, dtype=torch.float32)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    gguf_integration.drop_gguf_quantizer_marker(model)
    assert not gguf_integration.has_gguf_quantizer_marker(model)
    assert not getattr(model, "is_quantized", False)
    model.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved", dtype=torch.float32)
    after = reloaded.state_dict()
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), name
    gguf_integration.drop_gguf_quantizer_marker(model)  # idempotent on a clean model


def test_drop_gguf_quantizer_marker_refuses_packed_weights(tiny_gguf):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name, dtype=torch.float32)
    model.hf_quantizer.packed_modules = {"model.layers.0.mlp.up_proj": object()}
    with pytest.raises(ModelSourceError, match="packed"):
        gguf_integration.drop_gguf_quantizer_marker(model)
    assert gguf_integration.has_gguf_quantizer_marker(model)


def test_load_gguf_dense_returns_a_clean_model_and_the_files_tokenizer(tiny_gguf):
    model, tokenizer = gguf_integration.load_gguf_dense(tiny_gguf)
    assert not gguf_integration.has_gguf_quantizer_marker(model)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 32
    assert tokenizer.eos_token == "<|im_end|>"
    assert "<|im_start|>" in tokenizer.chat_template
    # The merges in the file are used: "hell" is one token.
    assert tokenizer.convert_ids_to_tokens(tokenizer("hello")["input_ids"])[0] == "hell"


def test_load_gguf_dense_rejects_a_file_that_is_not_gguf(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ModelSourceError, match="not a GGUF file"):
        gguf_integration.load_gguf_dense(fake)


def test_verify_saved_folder_catches_a_corrupted_save(tiny_gguf, tmp_path):
    model, tokenizer = gguf_integration.load_gguf_dense(tiny_gguf)
    gguf_integration.save_dense_folder(model, tokenizer, tmp_path / "good")
    report = gguf_integration.verify_saved_folder(model, tokenizer, tmp_path / "good", 1e-5)
    assert report["max_abs_logit_diff"] <= 1e-5 and report["probe_tokens"] > 20

    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.mul_(1.01)  # the reference drifts from what was saved
    with pytest.raises(ModelSourceError, match="logits differ"):
        gguf_integration.verify_saved_folder(model, tokenizer, tmp_path / "good", 1e-5)
