"""PEFT LoRA adapter -> GGUF LoRA adapter that llama.cpp applies on the base model's GGUF (`llama-cli -m base.gguf
--lora adapter.gguf`, llama-cpp-python's `lora_path=`).

llama.cpp computes W x + (alpha / r) * B (A x) with `adapter.lora.alpha` and the rank read from the tensors, so
rsLoRA's alpha / sqrt(r) is written as an equivalent alpha. q/k rows are reordered exactly like the base weights
(see `gguf._unpermute_rotary`); for a product B A only B's output rows move. DoRA (magnitude vectors) has no llama.cpp
form and is refused.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from tuneforge.export.gguf import (
    TUNEFORGE_KEY,
    GGUFExportError,
    _unpermute_rotary,
    check_architecture,
)


def write_lora_gguf(adapter_dir: Path, base_config, path: Path, provenance: dict | None = None) -> dict:
    import gguf
    from safetensors.numpy import load_file

    adapter_dir = Path(adapter_dir)
    spec = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    if spec.get("peft_type") != "LORA":
        raise GGUFExportError(f"{adapter_dir}: a {spec.get('peft_type')} adapter has no llama.cpp GGUF form",
                              hint="export the merged model as GGUF instead (--format gguf)")
    if spec.get("use_dora"):
        raise GGUFExportError(f"{adapter_dir}: DoRA adapters have no llama.cpp GGUF form",
                              hint="export the merged model as GGUF instead")
    arch = check_architecture(base_config)
    rank, alpha = int(spec["r"]), float(spec["lora_alpha"])
    if spec.get("rank_pattern") or spec.get("alpha_pattern"):
        raise GGUFExportError(f"{adapter_dir}: per-module ranks/alphas cannot be written as one adapter.lora.alpha")
    effective_alpha = alpha * math.sqrt(rank) if spec.get("use_rslora") else alpha
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch), int(base_config.num_hidden_layers))
    n_head = int(base_config.num_attention_heads)
    n_kv = int(getattr(base_config, "num_key_value_heads", None) or n_head)

    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, arch)])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, effective_alpha)
    for key, value in (provenance or {}).items():
        if value is not None:
            writer.add_string(TUNEFORGE_KEY.format(key), str(value))
    count = 0
    for key in sorted(weights):
        if ".lora_A." not in key:
            if ".lora_B." not in key:
                raise GGUFExportError(f"{adapter_dir}: tensor {key} is not a LoRA A/B matrix (modules_to_save?)",
                                      hint="export the merged model as GGUF instead")
            continue
        hf_name = key.replace("base_model.model.", "", 1).replace(".lora_A.weight", ".weight")
        target = names.get_name(hf_name, try_suffixes=(".weight",))
        if target is None:
            raise GGUFExportError(f"{adapter_dir}: adapted module {hf_name} has no place in llama.cpp's layout")
        lora_a = weights[key].astype(np.float32)
        lora_b = weights[key.replace(".lora_A.", ".lora_B.")].astype(np.float32)
        if arch == "LLAMA" and ".q_proj." in hf_name:
            lora_b = _unpermute_rotary(lora_b, n_head)
        elif arch == "LLAMA" and ".k_proj." in hf_name:
            lora_b = _unpermute_rotary(lora_b, n_kv)
        writer.add_tensor(f"{target}.lora_a", lora_a)  # target keeps the .weight suffix
        writer.add_tensor(f"{target}.lora_b", lora_b)
        count += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"modules": count, "rank": rank, "alpha": effective_alpha}
