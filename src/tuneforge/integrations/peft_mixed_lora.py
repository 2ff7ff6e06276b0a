"""Mixed-adapter LoRA batches in two matrix products: replaces PEFT's `LoraLayer._mixed_batch_forward` (peft 0.21,
`peft/tuners/lora/layer.py`; `lora.Linear.forward` calls it when a forward gets `adapter_names=[...]`, one adapter
name per row, "__base__" for the bare base) on the LoRA Linear layers of a model the `InferenceEngine` serves.

Upstream behaviour replaced: for every distinct adapter in the batch PEFT builds the row list in Python, indexes the
sub-batch, runs lora_A, lora_B and the scaling on it and index-adds the result back: with k adapters k times half a
dozen small kernels (and k host-to-device index copies on an accelerator) per target module per decoding step;
measured on the serving benchmark as mixed-adapter throughput 0.77x single-adapter.

Here, per layer, the adapters present in the batch are stacked along the rank axis (S-LoRA/punica in spirit, with a
mask instead of a per-row weight gather): A_cat [sum r, in] and B_cat [out, sum r], ranks as they are (no padding),
and every row gets a mask over the stacked rank slots holding its adapter's scaling on that adapter's slots and 0
elsewhere (a base row, or an adapter this layer does not target: all 0). Then

    result = base(x) + ((x @ A_cat^T) * mask[row]) @ B_cat^T

two GEMMs and one multiply whatever the number of adapters, the same for a single-adapter batch. The row's delta is
PEFT's `lora_B(lora_A(x)) * scaling` up to float rounding (scaling applied before B instead of after; the other
adapters' slots add exact zeros, though the summation may group differently): logits within ~1e-6 of PEFT's and of
the row alone, so a mixed batch gives each request its greedy answer alone except on a near-tie (which PEFT's path,
whose base matmul also depends on the batch, does not rule out either). Flops grow with the summed rank of the
adapters *in the batch* (3 adapters of r 16 on a 576-wide layer: 48 extra columns, about a sixth of the base matmul
of q_proj); for batches mixing many adapters of large rank a per-row weight gather (bmm) would do fewer flops, at the
price of copying r x (in + out) weights per row per step.

Memory: one extra copy of the LoRA weights of the adapters in the current batch, per layer (r x (in + out) values per
adapter per layer: the adapter's own size, about 7.4 MB in fp32 for an r 16 q/k/v/o adapter on SmolLM2-135M), kept
until a batch uses a different set of adapters or `prepare` runs again; plus a [batch, sum r] mask per layer.

Staleness: the stacks are copies, so `prepare(model)` must run after every adapter load or removal
(`InferenceEngine.add_adapter` / `remove_adapter` do, which covers the server's register/unregister and its LRU pool):
it patches LoRA layers created by the new adapter and drops every cached stack. Changing LoRA weights in place or
calling PEFT's `set_scale` / `scale_layer` behind the engine's back needs a `prepare` call too.

Falls back to PEFT's own `_mixed_batch_forward` (unchanged behaviour):
- layers that are not exactly `peft.tuners.lora.layer.Linear` are never patched: LoRA on embeddings
  (`lora.Embedding`), Conv1d/2d/3d, MultiheadAttention, and the quantised LoRA layers (bitsandbytes, HQQ, ...) that
  ship their own `_mixed_batch_forward`;
- a Linear with `fan_in_fan_out` (GPT-2 style Conv1D base);
- per call: an adapter of the batch with a LoRA variant on that layer (DoRA - which PEFT refuses in mixed batches
  anyway -, aLoRA and the other variants) or `lora_bias`, `alora_offsets` passed, the layer in training mode (dropout
  would be active), autograd enabled (the stacks are detached copies), or adapters whose weights differ in dtype or
  device.
Training never goes through here: only the inference engine patches a model, and PEFT refuses `adapter_names` in
training mode.

Also here, for adapters removed at run time: `delete_adapter`, around a PEFT quirk that leaves a deleted adapter active.
"""
from __future__ import annotations

import types

import torch
from peft.tuners.lora.layer import VARIANT_KWARG_KEYS, Linear

#: Attribute names set on a patched layer (the bound replacement shadows the class method; the cache of stacks).
_CACHE = "_tuneforge_mixed_lora"


class _Stacks:
    """One layer's cache: the stacked weights for one set of adapters, and the row mask for one `adapter_names`."""

    __slots__ = ("used", "a_cat", "b_cat", "slots", "names", "mask")

    def __init__(self):
        self.used: tuple[str, ...] | None = None   # adapters (present in this layer) the stacks hold, sorted
        self.a_cat = self.b_cat = None              # [sum r, in], [out, sum r]
        self.slots: dict[str, tuple[int, int, float]] = {}  # adapter -> (first slot, rank, scaling)
        self.names: list[str] | None = None         # the adapter_names list the mask was built for (a copy)
        self.mask = None                            # [batch, sum r] in the LoRA dtype on x's device; None: no LoRA row


def prepare(model: torch.nn.Module) -> int:
    """Patch every plain LoRA Linear layer of `model` (idempotent) and drop all cached stacks; returns the count of
    patched layers. Call after every adapter load or removal."""
    count = 0
    for module in model.modules():
        if type(module) is not Linear or getattr(module, "fan_in_fan_out", False):
            continue
        module.__dict__["_mixed_batch_forward"] = types.MethodType(mixed_batch_forward, module)
        module.__dict__[_CACHE] = _Stacks()
        count += 1
    return count


def restore(model: torch.nn.Module) -> None:
    """Undo `prepare`: every layer runs PEFT's own `_mixed_batch_forward` again and the stacks are freed."""
    for module in model.modules():
        module.__dict__.pop("_mixed_batch_forward", None)
        module.__dict__.pop(_CACHE, None)


def is_prepared(module: torch.nn.Module) -> bool:
    return _CACHE in module.__dict__


def mixed_batch_forward(self, x: torch.Tensor, *args, adapter_names: list[str], **kwargs) -> torch.Tensor:
    """`LoraLayer._mixed_batch_forward` for a plain LoRA Linear, bound to the layer by `prepare`."""
    if any(kwargs.get(key) is not None for key in VARIANT_KWARG_KEYS) or self.training or torch.is_grad_enabled():
        return _upstream(self, x, *args, adapter_names=adapter_names, **kwargs)
    cache: _Stacks = self.__dict__[_CACHE]
    if cache.names != adapter_names or cache.mask is not None and cache.mask.device != x.device:
        # A new batch (decoding steps of one batch share the list): restack if its set of adapters changed.
        if not _build(self, cache, list(adapter_names), x.device):
            return _upstream(self, x, *args, adapter_names=adapter_names, **kwargs)
    for key in VARIANT_KWARG_KEYS:
        kwargs.pop(key, None)
    result = self.base_layer(x, *args, **kwargs)
    if cache.mask is None:  # only base rows (or adapters this layer does not target)
        return result
    mask = cache.mask.view(cache.mask.shape[0], *([1] * (x.dim() - 2)), cache.mask.shape[1])
    # The mask is fp32 for half-precision LoRA weights (a scaling such as 16/12 is not exact in bf16), like PEFT's
    # multiplication by a Python float.
    hidden = (torch.nn.functional.linear(x.to(cache.a_cat.dtype), cache.a_cat) * mask).to(cache.a_cat.dtype)
    result += torch.nn.functional.linear(hidden, cache.b_cat).to(result.dtype)
    return result


def _build(layer, cache: _Stacks, adapter_names: list[str], device: torch.device) -> bool:
    """Fill `cache` for this batch's adapter names; False when the batch needs PEFT's own path."""
    present = sorted({name for name in adapter_names if name in layer.lora_A})
    for name in present:
        if name in layer.lora_variant or layer.lora_bias.get(name, False) or layer.use_dora.get(name, False):
            return False
    weights = [(layer.lora_A[name].weight, layer.lora_B[name].weight) for name in present]
    if len({(a.dtype, a.device, b.dtype, b.device) for a, b in weights}) > 1:
        return False
    if tuple(present) != cache.used:
        cache.used, cache.slots, cache.a_cat, cache.b_cat = tuple(present), {}, None, None
        if present:
            first = 0
            for name, (a, _) in zip(present, weights):
                cache.slots[name] = (first, a.shape[0], float(layer.scaling[name]))
                first += a.shape[0]
            cache.a_cat = torch.cat([a.detach() for a, _ in weights], dim=0)
            cache.b_cat = torch.cat([b.detach() for _, b in weights], dim=1)
    cache.names = adapter_names
    cache.mask = None
    if present:
        half = cache.a_cat.dtype in (torch.float16, torch.bfloat16)
        mask = torch.zeros(len(adapter_names), cache.a_cat.shape[0], dtype=torch.float32 if half else cache.a_cat.dtype)
        for row, name in enumerate(adapter_names):
            slot = cache.slots.get(name)
            if slot is not None:
                mask[row, slot[0]:slot[0] + slot[1]] = slot[2]
        cache.mask = mask.to(device)
        cache.a_cat, cache.b_cat = cache.a_cat.to(device), cache.b_cat.to(device)
    return True


def delete_adapter(model, name: str) -> None:
    """`PeftModel.delete_adapter(name)`, leaving a loaded adapter active.

    Upstream quirk (peft 0.21): deleting the active adapter picks the next active one layer by layer, and when the
    remaining adapters target other modules than the deleted one `PeftModel.active_adapter` keeps the deleted name,
    so every later forward raises KeyError (in `has_active_enabled_adapter`) - a server whose LRU pool evicts its
    first adapter. The first remaining adapter is made active then (frozen: this is inference).
    """
    model.delete_adapter(name)
    if model.peft_config and model.active_adapter not in model.peft_config:
        model.set_adapter(next(iter(model.peft_config)), inference_mode=True)


def _upstream(layer, x, *args, adapter_names, **kwargs):
    """PEFT's own `_mixed_batch_forward` (the class method the bound replacement shadows)."""
    return type(layer)._mixed_batch_forward(layer, x, *args, adapter_names=adapter_names, **kwargs)
