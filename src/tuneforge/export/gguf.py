"""Merged Hugging Face model -> GGUF file that llama.cpp (and Ollama, LM Studio, ...) load, written with the `gguf`
package's writer, tensor-name maps and numpy quantizers.

Only what can be proven is written: Llama-family decoders (Llama, Mistral, SmolLM2: llama.cpp's `llama` layout;
Qwen2: its `qwen2` layout) with a byte-level BPE tokenizer (GPT-2 style: SmolLM2, Llama 3, Qwen2). Anything else is
refused with the reason, since a file llama.cpp loads but runs wrongly is worse than no file. The written file is
then checked in llama.cpp itself (`tuneforge.export.gguf_check`) before it is renamed into place.

Quantisation: `f16` (every matrix in half precision), `q8_0`, `q4_0` (8/4-bit blocks of 32 with one f16 scale).
Norms and biases stay f32 as in llama.cpp's own converter. For q4_0 the token embedding (also the output head when
tied) is kept at q8_0, as llama-quantize keeps the output head at higher precision: 4-bit logits cost the most.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tuneforge.errors import RunError

QUANTS = ("f16", "q8_0", "q4_0")
#: HF architecture -> llama.cpp architecture name (a gguf.MODEL_ARCH member name).
ARCHITECTURES = {"LlamaForCausalLM": "LLAMA", "MistralForCausalLM": "LLAMA", "Qwen2ForCausalLM": "QWEN2"}
TUNEFORGE_KEY = "tuneforge.{}"


class GGUFExportError(RunError):
    """A GGUF export refused: the model or tokenizer cannot be represented, or a round-trip check failed."""


# ------------------------------------------------------------------------------------------------ tokenizer
def pre_tokenizer_name(tokenizer_json: dict) -> str:
    """llama.cpp's name (`tokenizer.ggml.pre`) for the tokenizer's pre-tokenisation (how text is split before BPE).

    Read from the structure of tokenizer.json rather than guessed from the model name; a wrong name shows up in the
    token-id round trip, which then refuses the file.
    """
    pre = tokenizer_json.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits"):
        return "smollm"
    if kinds and kinds[0] == "Split":
        pattern = (parts[0].get("pattern") or {}).get("Regex", "")
        if "\\p{N}{1,3}" in pattern:
            return "llama-bpe"
        if "\\p{N}|" in pattern or pattern.endswith("\\p{N}"):
            return "qwen2"
    raise GGUFExportError(f"tokenizer pre-tokenizer {kinds or pre.get('type')!r} has no known llama.cpp equivalent",
                          hint="GGUF export supports GPT-2-style byte-level BPE tokenizers (SmolLM2, Llama 3, Qwen2)")


def tokenizer_fields(tokenizer, model_config, generation_config) -> dict:
    """Everything llama.cpp needs to tokenise and stop exactly like the HF tokenizer: vocabulary, token types,
    merges, pre-tokeniser, special ids, add-BOS flag and the chat template (byte-equal to the model's own)."""
    from gguf import TokenType

    from tuneforge.models.inference import end_of_turn_id

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise GGUFExportError(f"{type(tokenizer).__name__} is not a fast (tokenizers) tokenizer",
                              hint="GGUF export reads the tokenizer's tokenizer.json")
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        kind = "SentencePiece-style BPE (byte_fallback)" if model.get("byte_fallback") else model.get("type")
        raise GGUFExportError(f"tokenizer model {kind!r} is not supported for GGUF export",
                              hint="supported: GPT-2-style byte-level BPE tokenizers (SmolLM2, Llama 3, Qwen2)")
    pre = pre_tokenizer_name(spec)

    vocab_size = int(model_config.vocab_size)
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise GGUFExportError(f"tokenizer has token id {max(by_id)} but the model's vocab_size is {vocab_size}")
    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in by_id:  # embedding rows past the tokenizer (padded vocab): never produced, never matched
            tokens.append(f"[PAD{index}]")
            types.append(TokenType.UNUSED)
            continue
        tokens.append(by_id[index])
        if index in added:
            types.append(TokenType.CONTROL if added[index].get("special") else TokenType.USER_DEFINED)
        else:
            types.append(TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

    template = getattr(tokenizer, "chat_template", None)
    eot = end_of_turn_id(tokenizer)
    if template and eot is None:
        raise GGUFExportError("the chat template writes no special token after an assistant message, so llama.cpp "
                              "could never recognise the end of a turn and generation would not stop",
                              hint="fix the template's end-of-turn token (e.g. <|im_end|>) and export again")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise GGUFExportError("the tokenizer has no eos token: generation in llama.cpp would never stop")
    gen_eos = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    gen_eos = [] if gen_eos is None else ([gen_eos] if isinstance(gen_eos, int) else list(gen_eos))
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    return {
        "tokens": tokens, "types": types, "merges": merges, "pre": pre, "chat_template": template,
        "bos": tokenizer.bos_token_id, "eos": int(eos), "eot": eot, "pad": tokenizer.pad_token_id,
        "unk": tokenizer.unk_token_id, "generation_eos": [int(i) for i in gen_eos],
        "add_bos": len(with_special) > len(plain) and with_special[0] == tokenizer.bos_token_id,
        "add_eos": len(with_special) > len(plain) and with_special[-1] == tokenizer.eos_token_id,
    }


# ------------------------------------------------------------------------------------------------ tensors
def _rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0)


def check_architecture(config, class_name: str | None = None) -> str:
    """The gguf MODEL_ARCH name for a supported config; a clear refusal otherwise."""
    names = list(getattr(config, "architectures", None) or ([class_name] if class_name else []))
    arch = next((ARCHITECTURES[n] for n in names if n in ARCHITECTURES), None)
    if arch is None:
        model_type = getattr(config, "model_type", "?")
        raise GGUFExportError(f"GGUF export does not support architecture {names or model_type!r}",
                              hint="supported: " + ", ".join(sorted(ARCHITECTURES))
                              + "; convert other models with llama.cpp's convert_hf_to_gguf.py")
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = (params.get("rope_type") or params.get("type")) if isinstance(params, dict) else None
    if rope_type not in (None, "default"):
        raise GGUFExportError(f"rope scaling {rope_type!r} is not written by tuneforge's GGUF export",
                              hint="only models with plain rotary embeddings are exported")
    return arch


def _unpermute_rotary(weight: np.ndarray, n_head: int) -> np.ndarray:
    """HF Llama rotates the two halves of each head (rotate_half); llama.cpp's `llama` layout rotates adjacent
    pairs. Reordering the rows of q/k turns one into the other, so both compute the same attention."""
    return (weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def tensor_type(name: str, array, quant: str):
    """The GGML type `write_gguf` stores a tensor as (`array`: anything with .ndim and .shape)."""
    from gguf import GGMLQuantizationType as Q

    if array.ndim < 2:
        return Q.F32
    if quant == "f16":
        return Q.F16
    wanted = Q.Q8_0 if quant == "q8_0" or name.startswith(("token_embd", "output.")) else Q.Q4_0
    # Blocks of 32 along a row: a row length that does not divide cannot be block-quantised.
    return wanted if array.shape[-1] % 32 == 0 else Q.F16


def gguf_tensors(state_dict: dict, config, arch: str, quant: str):
    """Yield (gguf name, array, ggml type) for every weight, renamed with gguf's map and quantised."""
    import gguf

    n_layers = int(config.num_hidden_layers)
    n_head = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_head)
    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch), n_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in state_dict.items():
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue  # recomputed by llama.cpp / the embedding doubles as the output head
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise GGUFExportError(f"weight {hf_name} has no place in llama.cpp's {arch.lower()} layout",
                                  hint="the model has parts GGUF export does not know; it was not written")
        array = tensor.detach().float().cpu().numpy()
        if arch == "LLAMA" and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            array = _unpermute_rotary(array, n_head)
        elif arch == "LLAMA" and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            array = _unpermute_rotary(array, n_kv)
        yield name, array, tensor_type(name, array, quant)  # get_name keeps the .weight/.bias suffix


def _file_type(quant: str) -> int:
    from gguf import LlamaFileType

    return {"f16": LlamaFileType.MOSTLY_F16, "q8_0": LlamaFileType.MOSTLY_Q8_0,
            "q4_0": LlamaFileType.MOSTLY_Q4_0}[quant]


# ------------------------------------------------------------------------------------------------ writing
def write_gguf(model, tokenizer, path: Path, quant: str, provenance: dict | None = None) -> dict:
    """Write `model` (a merged HF causal LM) and `tokenizer` as a GGUF at `path`; returns the tokenizer fields
    written (the checks compare llama.cpp against them)."""
    import gguf

    if quant not in QUANTS:
        raise GGUFExportError(f"--quant {quant!r}: choose one of {', '.join(QUANTS)}")
    config = model.config
    arch = check_architecture(config, type(model).__name__)
    fields = tokenizer_fields(tokenizer, config, getattr(model, "generation_config", None))

    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, arch)])
    n_head = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // n_head)
    provenance = provenance or {}
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(str(provenance.get("run") or provenance.get("base_model") or "tuneforge export"))
    if provenance.get("license"):
        writer.add_license(str(provenance["license"]))
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(int(getattr(config, "num_key_value_heads", None) or n_head))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(int(config.vocab_size))
    writer.add_file_type(_file_type(quant))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(fields["pre"])
    writer.add_token_list(fields["tokens"])
    writer.add_token_types(fields["types"])
    writer.add_token_merges(fields["merges"])
    writer.add_eos_token_id(fields["eos"])
    if fields["bos"] is not None:
        writer.add_bos_token_id(int(fields["bos"]))
    if fields["eot"] is not None:
        writer.add_eot_token_id(int(fields["eot"]))
    if fields["pad"] is not None:
        writer.add_pad_token_id(int(fields["pad"]))
    if fields["unk"] is not None:
        writer.add_unk_token_id(int(fields["unk"]))
    writer.add_add_bos_token(bool(fields["add_bos"]))
    writer.add_add_eos_token(bool(fields["add_eos"]))
    if fields["chat_template"]:
        writer.add_chat_template(fields["chat_template"])
    for key, value in provenance.items():
        if value is not None and key != "license":
            writer.add_string(TUNEFORGE_KEY.format(key), str(value))

    for name, array, qtype in gguf_tensors(model.state_dict(), config, arch, quant):
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, array.astype(np.float32))
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, array.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(array.astype(np.float32), qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return fields


def read_metadata(path: Path) -> dict:
    """The GGUF's scalar/string metadata (arrays left out), e.g. tuneforge provenance and token ids."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(str(path))
    out = {}
    for key, field in reader.fields.items():
        if not field.types or field.types[0] == GGUFValueType.ARRAY:
            continue
        value = field.parts[field.data[0]]
        out[key] = bytes(value).decode("utf-8") if field.types[0] == GGUFValueType.STRING else value.tolist()[0]
    return out
