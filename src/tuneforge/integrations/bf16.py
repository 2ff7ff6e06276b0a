"""Whether this machine computes bfloat16 natively: what `training.frozen_base_dtype: auto` and
`training.mixed_precision: auto` resolve by.

On a CPU, bf16 matmuls are fast only with AVX512-BF16 or AMX instructions (oneDNN); without them PyTorch converts
to float32 and back, slower than float32 itself. PyTorch exposes the CPU checks only as private functions of
`torch.cpu` (`_is_avx512_bf16_supported`, `_is_amx_tile_supported`, present since 2.3); where they are missing
the answer is no, the safe side. A CUDA device answers through `torch.cuda.is_bf16_supported()`.
"""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def native_bf16() -> tuple[bool, str]:
    """(whether bf16 is native here, the reason in words) for the device a run trains on."""
    import torch

    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"{torch.cuda.get_device_name(0)} computes bf16"
        return False, f"{torch.cuda.get_device_name(0)} has no native bf16"
    cpu = getattr(torch, "cpu", None)
    for check, name in (("_is_amx_tile_supported", "AMX"), ("_is_avx512_bf16_supported", "AVX512-BF16")):
        probe = getattr(cpu, check, None)
        if probe is not None and probe():
            return True, f"this CPU has {name}"
    return False, "this CPU has neither AVX512-BF16 nor AMX (bf16 would be emulated, slower than float32)"
