"""GGUF export: what is written (and refused) without llama.cpp, and the round trip in llama.cpp itself."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.tiny_models import TOKENIZER_DIR, build_tiny_model

HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
needs_llama_cpp = pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed (the dev extra "
                                     "builds it: python3 dev.py setup)")


def _items(n: int = 40) -> list[dict]:
    from tuneforge.eval.tasks import items_from_dataset

    return items_from_dataset("quickstart:test.jsonl", max_items=n)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ------------------------------------------------------------------------------------------- no llama.cpp needed
def test_unsupported_architecture_is_refused_with_a_clear_message(tmp_path):
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from tuneforge.console import make_console
    from tuneforge.export.gguf import GGUFExportError
    from tuneforge.recipes.export import export_gguf

    torch.manual_seed(0)
    folder = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=49152, n_embd=32, n_layer=1, n_head=2, n_positions=64)).save_pretrained(
        folder)
    AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(folder)
    with pytest.raises(GGUFExportError) as info:
        export_gguf(folder, tmp_path / "out", ["f16"], provenance={}, items=[], console=make_console(quiet=True))
    assert "does not support architecture ['GPT2LMHeadModel']" in info.value.message
    assert "LlamaForCausalLM" in info.value.hint
    assert _leftovers(tmp_path / "out") == []


def test_template_without_an_end_of_turn_token_is_refused(tmp_path):
    from transformers import AutoTokenizer

    from tuneforge.export.gguf import GGUFExportError, write_gguf

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    # A tampered template: assistant turns end with plain text instead of the <|im_end|> special token.
    tokenizer.chat_template = tokenizer.chat_template.replace("'<|im_end|>'", "'[end]'")
    with pytest.raises(GGUFExportError, match="writes no special token after an assistant message"):
        write_gguf(build_tiny_model(), tokenizer, tmp_path / "x.gguf", "f16")


def test_written_metadata_carries_template_special_ids_and_provenance(tmp_path):
    from transformers import AutoTokenizer

    from tuneforge.export.gguf import read_metadata, write_gguf

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    path = tmp_path / "m.gguf"
    write_gguf(build_tiny_model(), tokenizer, path, "q8_0",
               {"run": "r1", "tuneforge_version": "0.1.0", "base_weights_sha256": "abc"})
    meta = read_metadata(path)
    assert meta["tokenizer.chat_template"] == tokenizer.chat_template  # byte-equal
    assert meta["tokenizer.ggml.eos_token_id"] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert meta["tokenizer.ggml.eot_token_id"] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert meta["tokenizer.ggml.bos_token_id"] == tokenizer.bos_token_id
    assert meta["tokenizer.ggml.pre"] == "gpt-2"
    assert meta["general.architecture"] == "llama"
    assert meta["general.file_type"] == 7  # MOSTLY_Q8_0
    assert (meta["tuneforge.run"], meta["tuneforge.base_weights_sha256"]) == ("r1", "abc")


def test_export_config_gguf_section_is_validated():
    from pydantic import ValidationError

    from tuneforge.config.schema import ExportConfig

    assert ExportConfig(gguf=["f16", "q8_0"]).gguf == ["f16", "q8_0"]
    with pytest.raises(ValidationError, match="q5_k"):
        ExportConfig(gguf=["q5_k"])
    with pytest.raises(ValidationError, match="set export.merged: true"):
        ExportConfig(gguf=["f16"], merged=False)


# ------------------------------------------------------------------------------------------- llama.cpp round trip
@needs_llama_cpp
@pytest.mark.llamacpp
def test_f16_round_trip_is_exact_in_llama_cpp(tiny_model_dir, tmp_path):
    from tuneforge.console import make_console
    from tuneforge.recipes.export import export_gguf

    records = export_gguf(tiny_model_dir, tmp_path / "gguf", ["f16"], provenance={"run": "t"}, items=_items(),
                          console=make_console(quiet=True))
    checks = records["f16"]["checks"]
    assert checks["tokens"]["equal"] == checks["tokens"]["strings"] >= 1000
    assert checks["chat_template"]["equal"] == checks["chat_template"]["conversations"] > 0
    generation = checks["generation"]
    assert generation["identical"] == generation["prompts"] == 8
    assert generation["top1_agreement"] == 1.0
    assert Path(records["f16"]["path"]).is_file()


@needs_llama_cpp
@pytest.mark.llamacpp
def test_q8_0_top1_agreement_is_above_the_bar(tiny_model_dir, tmp_path):
    from tuneforge.console import make_console
    from tuneforge.recipes.export import export_gguf

    records = export_gguf(tiny_model_dir, tmp_path / "gguf", ["q8_0"], provenance={}, items=_items(),
                          console=make_console(quiet=True))
    generation = records["q8_0"]["checks"]["generation"]
    assert generation["top1_agreement"] >= 0.99
    assert generation["positions"] >= 200


@needs_llama_cpp
@pytest.mark.llamacpp
def test_tampered_eos_in_the_file_is_caught_and_no_file_is_left(tiny_model_dir, tmp_path, monkeypatch):
    from tuneforge.console import make_console
    from tuneforge.export import gguf as gguf_module
    from tuneforge.export.gguf import GGUFExportError
    from tuneforge.recipes.export import export_gguf

    real = gguf_module.tokenizer_fields

    def tampered(tokenizer, config, generation_config):
        fields = real(tokenizer, config, generation_config)
        fields["eos"] = fields["eot"] = tokenizer.convert_tokens_to_ids("Ġthe")  # an ordinary word as EOS
        return fields

    monkeypatch.setattr(gguf_module, "tokenizer_fields", tampered)
    with pytest.raises(GGUFExportError, match=r"check 4 \(stop\) failed") as info:
        export_gguf(tiny_model_dir, tmp_path / "gguf", ["f16"], provenance={}, items=_items(8),
                    console=make_console(quiet=True))
    assert "model-f16.gguf refused, no file written" in info.value.message
    assert _leftovers(tmp_path / "gguf") == []


@needs_llama_cpp
@pytest.mark.llamacpp
def test_llamacpp_engine_answers_like_the_hf_model_and_scores_references(tiny_model_dir, tmp_path):
    import math

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.export.gguf import write_gguf
    from tuneforge.models.inference import InferenceEngine
    from tuneforge.models.llamacpp import LlamaCppModel

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    write_gguf(model, tokenizer, tmp_path / "m.gguf", "f16")
    items = _items(4)
    llama = LlamaCppModel(tmp_path / "m.gguf")
    hf = InferenceEngine(model, tokenizer)
    assert llama.answer(items, max_new_tokens=12, progress=False) == hf.answer(items, max_new_tokens=12,
                                                                                progress=False)
    assert llama.tokens_per_second and llama.tokens_per_second > 0
    for (nll_l, n_l), (nll_h, n_h) in zip(llama.reference_nll(items), hf.reference_nll(items)):
        assert n_l == n_h
        assert math.isclose(nll_l, nll_h, rel_tol=2e-2)


@needs_llama_cpp
@pytest.mark.llamacpp
def test_lora_adapter_gguf_applied_by_llama_cpp_matches_the_peft_model(tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.export.gguf import write_gguf
    from tuneforge.export.gguf_check import check_generation
    from tuneforge.export.gguf_lora import write_lora_gguf
    from tuneforge.models.inference import InferenceEngine
    from tuneforge.models.llamacpp import LlamaCppModel

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj",
                                                                               "o_proj", "down_proj"]))
    torch.manual_seed(1)
    with torch.no_grad():  # a trained-looking adapter: B is zero at init, which would prove nothing
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    peft.save_pretrained(tmp_path / "adapter")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    write_gguf(base, tokenizer, tmp_path / "base.gguf", "f16")
    info = write_lora_gguf(tmp_path / "adapter", base.config, tmp_path / "adapter.gguf")
    assert info["modules"] == 2 * 5
    tuned = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    prompts = [InferenceEngine(tuned, tokenizer).prompt_ids(item) for item in _items(6)]
    with_lora = check_generation(LlamaCppModel(tmp_path / "base.gguf", lora_path=str(tmp_path / "adapter.gguf")),
                                 tuned, tokenizer, prompts, "f16", 24)
    assert with_lora["identical"] == with_lora["prompts"] == 6
    # Without the adapter llama.cpp answers differently: the adapter is really applied.
    without = check_generation(LlamaCppModel(tmp_path / "base.gguf"), tuned, tokenizer, prompts, "q4_0", 24)
    assert without["top1_agreement"] < 0.9


@needs_llama_cpp
@pytest.mark.llamacpp
def test_qwen2_layout_round_trip_is_exact(tmp_path):
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from tuneforge.console import make_console
    from tuneforge.recipes.export import export_gguf

    torch.manual_seed(0)
    folder = tmp_path / "qwen2"
    Qwen2ForCausalLM(Qwen2Config(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                 tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(folder)
    records = export_gguf(folder, tmp_path / "gguf", ["f16"], provenance={}, items=_items(8),
                          console=make_console(quiet=True))
    generation = records["f16"]["checks"]["generation"]
    assert generation["identical"] == generation["prompts"]


def test_f16_reference_rounds_the_matrices_the_file_stores_and_leaves_vectors(tiny_model):
    import torch

    from tuneforge.export.gguf_check import weights_as_stored

    rounded = weights_as_stored(tiny_model)
    for (name, before), after in zip(tiny_model.named_parameters(), rounded.parameters()):
        if before.ndim >= 2:
            assert torch.equal(after, before.half().float()), name
        else:
            assert torch.equal(after, before), name  # norm weights stay float32 in the GGUF
    assert any(not torch.equal(a, b) for a, b in zip(tiny_model.parameters(), rounded.parameters()))
