"""Greedy decoding for evaluation, written out instead of `model.generate` because three savings need the loop.

`InferenceEngine.generate` sends greedy requests without mixed adapters here (evaluation's case); sampling,
per-prompt adapters and non-LoRA PEFT methods keep transformers' `generate`. The argmax at every step is the same
as `generate`'s greedy search; what changes is how much work the model does to get there:

- **Shared prompt prefix computed once.** Evaluation prompts share a long head (the chat template's system turn and
  the task instruction: 42 of ~67 tokens in the quickstart). The longest common prefix of a batch runs once, its
  KV cache is repeated for every row, and only the rest of each prompt runs batched. Rows are laid out as
  [prefix][padding][own suffix] with the padding masked and position ids counted over real tokens only, so every
  row sees exactly its own prompt.
- **Finished rows leave the batch.** `generate` keeps computing rows that already produced a stop id until the
  longest row ends; here a row that stopped (or reached its own token limit) is dropped from the batch and from
  the cache once a quarter of the batch has finished.
- **LoRA merged for the call** (`merged_lora`): with one active adapter, each LoRA linear is swapped for a plain
  linear holding W + scale * B @ A (a copy; the model's own weights are never touched), and with adapters switched
  off the LoRA wrappers are swapped for their base layers. The wrappers' per-call work disappears from every step.

Greedy output is a sequence of argmaxes over fp32 logits, and these changes alter only float rounding (a merged
weight, another batch shape), so an argmax can flip only where the two best logits tie within rounding; the tests
compare token for token against a plain uncached argmax loop, and bench/bench_generation.py checks the quickstart's
predictions are identical to the old `generate` loop.
"""
from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch


def fast_greedy_target(model):
    """The module the greedy loop can run `model` through, or None when it must stay on `model.generate`.

    A plain causal LM runs as itself. A PEFT model qualifies when it is a LoRA model (its layers read their own
    active/disabled state, so the wrapped transformers model computes what the PEFT forward does); prompt learning
    adds virtual tokens and other methods are left to `generate`.
    """
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        PeftModel = ()  # noqa: N806
    if isinstance(model, PeftModel):
        configs = list(getattr(model, "peft_config", {}).values())
        if not configs or any(str(getattr(c, "peft_type", "")).split(".")[-1] != "LORA" for c in configs):
            return None
        if any(getattr(c, "is_prompt_learning", False) for c in configs):
            return None
        target = model.get_base_model()
    else:
        target = model
    parameters = inspect.signature(target.forward).parameters
    if not {"past_key_values", "position_ids", "attention_mask"} <= set(parameters):
        return None
    return target


@contextmanager
def merged_lora(model: torch.nn.Module) -> Iterator[int]:
    """Swap every supported LoRA linear of `model` for a plain linear computing what it computes now; yields how
    many were merged (active adapter folded in) and puts the LoRA layers back afterwards.

    Supported: PEFT's vanilla LoRA `Linear` (no DoRA or other variant, no LoRA bias) that is not already merged and
    has at most one active adapter, on a float32 base: a bf16/fp16 weight cannot hold the delta (its sum is rounded
    to an 8- or 11-bit mantissa; on the quickstart's bf16 base such a merge moved logits by 0.79), so those layers
    keep computing the adapter unmerged. Switched off (or not carrying the active adapter) it becomes its base layer;
    otherwise a new `nn.Linear` with a merged copy of the weight, sharing the base bias. Any other layer is left
    as it is and still computes its own (unmerged) output.
    """
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:  # pragma: no cover
        yield 0
        return
    swaps: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
    merged = 0
    for name, module in list(model.named_modules()):
        # Exact types: quantised layers (bitsandbytes' Linear4bit is an nn.Linear subclass) cannot be merged this way.
        if type(module) is not LoraLinear or module.merged or type(module.base_layer) is not torch.nn.Linear:
            continue
        if module.base_layer.weight.dtype is not torch.float32 and not module.disable_adapters:
            continue  # not exact in half precision (above)
        active = [a for a in module.active_adapters if a in module.lora_A]
        if module.disable_adapters or not active:
            replacement = module.base_layer
        elif len(active) == 1 and active[0] not in module.lora_variant and not module.lora_bias[active[0]]:
            base = module.base_layer
            # skip_init: the weight is overwritten at once, so nn.Linear's random init would be wasted work.
            replacement = torch.nn.utils.skip_init(torch.nn.Linear, base.in_features, base.out_features, bias=False,
                                                   device=base.weight.device, dtype=base.weight.dtype)
            # The same delta PEFT's own merge adds (transposed for fan_in_fan_out, times the scaling).
            replacement.weight = torch.nn.Parameter(base.weight + module.get_delta_weight(active[0]).to(base.weight),
                                                    requires_grad=False)
            replacement.bias = base.bias
            merged += 1
        else:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        swaps.append((parent, child, module))
        setattr(parent, child, replacement)
    try:
        yield merged
    finally:
        for parent, child, module in reversed(swaps):
            setattr(parent, child, module)


def greedy_batch(
    model,
    rows: Sequence[Sequence[int]],
    limits: Sequence[int],
    stop_ids: set[int],
    pad_id: int,
    *,
    share_prefix: bool = True,
    on_step: Callable[[list[int]], None] | None = None,
) -> list[list[int]]:
    """Greedy new tokens for each row (ending with its stop id when it produced one), at most `limits[i]` each.

    `on_step(tokens)` gets, after every step, the token of each row in `rows` order (pad ids for rows that have
    finished). The caller holds no_grad and eval mode.
    """
    from transformers import DynamicCache

    device = _device(model)
    count = len(rows)
    prefix = os.path.commonprefix([list(r) for r in rows]) if share_prefix and count > 1 else []
    # Every row keeps at least one token of its own: the logits of its last prompt token come from the batched pass.
    prefix = list(prefix[: min(len(r) for r in rows) - 1])
    keep_logits = _logits_to_keep(model)

    cache = DynamicCache(config=getattr(model, "config", None))
    if prefix:
        model(input_ids=torch.tensor([prefix], device=device), past_key_values=cache, use_cache=True, **keep_logits)
        cache.batch_repeat_interleave(count)
    input_ids, mask, positions = left_padded([r[len(prefix):] for r in rows], pad_id, prefix=len(prefix))
    mask, positions = mask.to(device), positions.to(device)
    logits = model(input_ids=input_ids.to(device), attention_mask=mask, position_ids=positions[:, len(prefix):],
                   past_key_values=cache, use_cache=True, **keep_logits).logits

    out: list[list[int]] = [[] for _ in range(count)]
    alive = list(range(count))  # batch position -> row
    finished: set[int] = set()
    last = positions[:, -1:]
    while True:
        tokens = logits[:, -1].float().argmax(-1).tolist()
        produced: dict[int, int] = {}
        for position, row in enumerate(alive):
            if row in finished:
                continue
            produced[row] = tokens[position]
            out[row].append(tokens[position])
            if tokens[position] in stop_ids or len(out[row]) >= limits[row]:
                finished.add(row)
        if on_step is not None:
            on_step([produced.get(row, pad_id) for row in range(count)])
        if len(finished) == count:
            return out
        done_here = [p for p, row in enumerate(alive) if row in finished]
        if len(done_here) >= max(1, len(alive) // 4):
            keep = [p for p, row in enumerate(alive) if row not in finished]
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, last = mask[index], last[index]
            tokens = [tokens[p] for p in keep]
            alive = [alive[p] for p in keep]
        # Finished rows still in the batch are fed a pad id; nothing they produce is read.
        step_ids = torch.tensor([[pad_id if row in finished else t] for row, t in zip(alive, tokens)], device=device)
        mask = torch.cat([mask, torch.ones((len(alive), 1), dtype=mask.dtype, device=device)], dim=1)
        last = last + 1
        logits = model(input_ids=step_ids, attention_mask=mask, position_ids=last, past_key_values=cache,
                       use_cache=True).logits


def left_padded(rows: Sequence[Sequence[int]], pad_id: int, *, prefix: int = 0):
    """Rows laid out as [prefix][padding][own tokens]: (input_ids [n, width] without the prefix, attention mask
    [n, prefix + width] with the padding 0, position ids [n, prefix + width] counting real tokens only).

    A padding slot's position is never seen (its key is masked); the `prefix` columns are real tokens every row
    shares (already in a cache). Used by `greedy_batch` and the serving engine's continuous batch.
    """
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), prefix + width), dtype=torch.long)
    mask[:, :prefix] = 1
    for row, tokens in enumerate(rows):
        input_ids[row, width - len(tokens):] = torch.tensor(list(tokens), dtype=torch.long)
        mask[row, prefix + width - len(tokens):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids, mask, positions


def _logits_to_keep(model) -> dict:
    """Ask for the last position's logits only when the model can skip the others (most transformers models)."""
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def _device(model) -> torch.device:
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else next(model.parameters()).device
