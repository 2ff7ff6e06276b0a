"""GGUF -> dense Hugging Face model, through transformers' own GGUF loader.

Everything here touches transformers' GGUF internals (its quantizer object, its config class), so the
workarounds for their quirks live in this one module and nowhere else.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.errors import ModelSourceError

GGUF_MAGIC = b"GGUF"

# Rendered through the model's own chat template when it has one, so the probe exercises the special tokens
# as well as ordinary text; fixed so that every verification of a given file compares the same numbers.
PROBE_MESSAGES = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Name three primary colours, then count from one to five."},
]
PROBE_TEXT = "The quick brown fox jumps over the lazy dog. 1 2 3 4 5 -- ¿Qué tal? 日本語"


def is_gguf_file(path: Path) -> bool:
    """True when the file starts with the GGUF magic; a cheap check before an expensive loader fails."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == GGUF_MAGIC
    except OSError:
        return False


def load_gguf_dense(gguf_path: Path, dtype: str = "float32") -> tuple[Any, Any]:
    """Load a .gguf file as a dense transformers model and its tokenizer (weights fully dequantised).

    `GgufConfig(dequantize=True)` is passed so transformers never keeps weights in packed GGUF blocks (it
    would when the optional `kernels` package is installed); a packed model could not be saved as plain
    safetensors or trained. The quantizer marker is then cleared with `drop_gguf_quantizer_marker`.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_path = Path(gguf_path)
    if not is_gguf_file(gguf_path):
        raise ModelSourceError(
            f"{gguf_path} is not a GGUF file (it does not start with the GGUF magic bytes)",
            hint="pass a .gguf model file, a local Hugging Face model folder, a hub id or a catalog name",
        )
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch_dtype, quantization_config=GgufConfig(dequantize=True)
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except (ValueError, KeyError, RuntimeError, OSError, NotImplementedError) as error:
        raise ModelSourceError(
            f"transformers could not load the GGUF file {gguf_path}: {error}",
            hint="transformers converts only some GGUF architectures (llama, mistral, qwen2, ...); "
            "convert this model to a Hugging Face folder with its original tools and pass the folder",
        ) from error
    drop_gguf_quantizer_marker(model)
    return model, tokenizer


def has_gguf_quantizer_marker(model: Any) -> bool:
    return (getattr(model, "hf_quantizer", None) is not None
            or getattr(model.config, "quantization_config", None) is not None)


def drop_gguf_quantizer_marker(model: Any) -> Any:
    """Clear the GGUF quantizer marker that transformers leaves on a model loaded with `gguf_file=`.

    Upstream behaviour (transformers 5.x, `GgufHfQuantizer`): for architectures that go through its legacy
    GGUF path (llama included) every tensor is dequantised to dense floats at load, yet `model.hf_quantizer`,
    `model.is_quantized` and `config.quantization_config` stay set. `GgufHfQuantizer.is_serializable()` returns
    False and `is_trainable` is False, so `save_pretrained` raises "The model is quantized with gguf and is not
    serializable" and trainers refuse the model. Because the weights already are plain dense tensors, the
    marker is only metadata: `hf_quantizer.remove_quantization_config(model)` removes it.

    Refuses (ModelSourceError) if any weight is still packed, since then the marker is not a lie and
    removing it would save garbage. Returns the model; a no-op when there is no marker.
    """
    import torch

    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config
        return model
    method = str(getattr(quantizer.quantization_config, "quant_method", ""))
    if "gguf" not in method.lower():
        raise ModelSourceError(
            f"refusing to clear a non-GGUF quantizer ({method}) from the model",
            hint="this workaround only applies to models loaded from a .gguf file",
        )
    packed = [name for name, param in model.named_parameters() if not torch.is_floating_point(param)]
    packed += list(getattr(quantizer, "packed_modules", {}) or {})
    if packed:
        raise ModelSourceError(
            f"the GGUF model still holds {len(packed)} packed (quantized) weights, e.g. {packed[0]}",
            hint="load it with transformers.GgufConfig(dequantize=True) so every weight is dense",
        )
    quantizer.remove_quantization_config(model)
    return model


def align_special_tokens(model: Any, tokenizer: Any) -> None:
    """Make config and generation config agree with the tokenizer's eos/bos/pad, so generation stops at eos.

    GGUF metadata carries the token ids; the tokenizer is the source of truth because chat templates
    render its tokens (for SmolLM2 eos must be `<|im_end|>`, id 2, not `<|endoftext|>`).
    """
    if tokenizer.eos_token_id is None:
        raise ModelSourceError(
            "the GGUF file's tokenizer has no end-of-sequence token",
            hint="generation would never stop; use a GGUF whose metadata sets tokenizer.ggml.eos_token_id",
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id = tokenizer.eos_token_id
        cfg.pad_token_id = tokenizer.pad_token_id
        if tokenizer.bos_token_id is not None:
            cfg.bos_token_id = tokenizer.bos_token_id


def save_dense_folder(model: Any, tokenizer: Any, folder: Path) -> None:
    """Write safetensors weights, config, generation config, tokenizer and chat template into `folder`."""
    if has_gguf_quantizer_marker(model):
        drop_gguf_quantizer_marker(model)
    align_special_tokens(model, tokenizer)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    if tokenizer.chat_template and not (Path(folder) / "chat_template.jinja").exists():
        # transformers 5 writes the template itself; older layouts kept it inside tokenizer_config.json.
        (Path(folder) / "chat_template.jinja").write_text(tokenizer.chat_template, encoding="utf-8")


def probe_input_ids(tokenizer: Any) -> list[int]:
    """Token ids of the fixed verification prompt (chat-rendered when the tokenizer has a template)."""
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(PROBE_MESSAGES, tokenize=False, add_generation_prompt=True)
        text += PROBE_TEXT
    else:
        text = PROBE_TEXT
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def probe_logits(model: Any, input_ids: list[int]):
    import torch

    with torch.no_grad():
        return model(torch.tensor([input_ids])).logits.float()


def verify_saved_folder(reference_model: Any, reference_tokenizer: Any, folder: Path, tolerance: float) -> dict:
    """Reload `folder` from disk and compare it with the model it was saved from.

    Checks that the tokenizer encodes the probe identically and that the logits agree within `tolerance`
    (max absolute difference). Returns the measurements; raises ModelSourceError when either check fails.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reloaded_tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = probe_input_ids(reference_tokenizer)
    reloaded_ids = probe_input_ids(reloaded_tokenizer)
    if ids != reloaded_ids:
        raise ModelSourceError(
            f"the tokenizer saved in {folder} encodes the probe prompt differently from the GGUF tokenizer",
            hint="the converted folder was discarded; please report this GGUF file and transformers version",
        )
    if reloaded_tokenizer.eos_token != reference_tokenizer.eos_token:
        raise ModelSourceError(
            f"the saved tokenizer's eos token is {reloaded_tokenizer.eos_token!r}, "
            f"the GGUF's is {reference_tokenizer.eos_token!r}"
        )
    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=reference_model.dtype)
    expected = probe_logits(reference_model, ids)
    actual = probe_logits(reloaded, ids)
    max_abs_diff = float((expected - actual).abs().max())
    if not max_abs_diff <= tolerance:  # `not <=` so that NaN fails too
        raise ModelSourceError(
            f"the converted folder's logits differ from the GGUF model's by {max_abs_diff:.3g} "
            f"(tolerance {tolerance:g}) on the probe prompt",
            hint="the converted folder was discarded; please report this GGUF file and transformers version",
        )
    return {"probe_tokens": len(ids), "max_abs_logit_diff": max_abs_diff, "tolerance": tolerance}
