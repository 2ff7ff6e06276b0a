"""bitsandbytes 4-bit (QLoRA) on CPU: the one place that touches bnb internals.

Upstream behaviour worked around (bitsandbytes 0.50): `bnb.nn.Linear4bit.forward` on CPU, when the layer is in
eval mode and the input does not require grad (any evaluation or `generate` under no_grad) and the CPU has
AVX512-BF16, repacks the weight *in place* into an inference layout (`quant_state.packing_format_for_cpu`).
Every later forward then runs `gemv_4bit`, which has no autograd kernel: the gradient through the frozen base
weight is dropped (torch only warns), so LoRA gradients of every layer below are silently wrong.
"""
from __future__ import annotations

import logging


def _quiet_import():
    # bnb logs a warning on import when the optional `kernels` package (a faster CPU gemm) is absent; the
    # built-in kernels it falls back to are correct, so the warning is noise for users.
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import bitsandbytes
    finally:
        logger.setLevel(level)
    return bitsandbytes


def require_bitsandbytes():
    try:
        return _quiet_import()
    except ImportError as error:
        from tuneforge.errors import ConfigError

        raise ConfigError(
            f"method qlora needs bitsandbytes ({error})",
            hint="pip install bitsandbytes (CPU support ships in the regular wheel since 0.45)",
        ) from error


def linear4bit_modules(model) -> list:
    bnb = require_bitsandbytes()
    return [module for module in model.modules() if isinstance(module, bnb.nn.Linear4bit)]


def keep_cpu_4bit_gradients_exact(model) -> int:
    """Stop bnb from repacking Linear4bit weights into its CPU inference layout; undo a repack already done.

    Returns the number of Linear4bit layers handled. Must run before the first evaluation forward; running it
    later is still safe because an already repacked weight is converted back to the training layout.
    """
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    layers = linear4bit_modules(model)
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
        state = layer.weight.quant_state
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            layer.weight.data, layer.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                layer.weight.data, state
            )
    return len(layers)


def dequantized_weight(layer):
    """The fp weight a Linear4bit computes with (its 4-bit codes times the block scales)."""
    from bitsandbytes.functional import dequantize_4bit

    return dequantize_4bit(layer.weight.data, layer.weight.quant_state)
