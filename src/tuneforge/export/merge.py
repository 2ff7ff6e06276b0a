"""Export: PEFT adapters and merged safetensors folders that plain transformers loads.

A merged folder carries the weights, the tokenizer, the tokenizer's *original* chat template (the derived
training template is byte-identical in output, but users and servers expect the model's own) and a
generation config whose EOS is the end-of-turn token, so generation stops where training taught it to.
"""
from __future__ import annotations

from pathlib import Path

import torch

from tuneforge.atomic import atomic_dir, write_json_atomic
from tuneforge.errors import RunError


def _generation_config(model, tokenizer):
    config = model.generation_config
    eos_ids = config.eos_token_id
    eos_ids = [] if eos_ids is None else ([eos_ids] if isinstance(eos_ids, int) else list(eos_ids))
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
        eos_ids.append(tokenizer.eos_token_id)
    config.eos_token_id = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    if config.pad_token_id is None and tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id
    return config


def save_adapter(peft_model, tokenizer, path: Path) -> Path:
    with atomic_dir(path) as tmp:
        peft_model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return path


def save_merged(model, tokenizer, path: Path, lineage: dict | None = None) -> Path:
    """Save a plain (already merged) transformers model with tokenizer, chat template and generation config."""
    if getattr(model, "generation_config", None) is not None:  # reward models (score heads) do not generate
        model.generation_config = _generation_config(model, tokenizer)
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if lineage:
            write_json_atomic(tmp / "tuneforge-lineage.json", lineage)
    return path


PROBE_TEXT = "Extract the contact as JSON.\n\nAda Byron works at Analytic Engines in London."


@torch.no_grad()
def probe_logits(model, tokenizer, text: str = PROBE_TEXT) -> torch.Tensor:
    was_training = model.training
    model.eval()
    batch = tokenizer([text], return_tensors="pt")
    device = next(model.parameters()).device
    logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()
    model.train(was_training)
    return logits


def _half_precision_base(model) -> bool:
    """Whether `model`'s weights include bf16/fp16 floats on an unquantized base (a 4-bit base has its own merge)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base, "hf_quantizer", None) is not None:
        return False
    return any(p.dtype in (torch.bfloat16, torch.float16) for p in model.parameters())


def merge_and_save(peft_model, tokenizer, out_dir: Path, lineage: dict | None = None, tolerance: float = 1e-4,
                   merge=None) -> dict:
    """Merge a PEFT model, prove its logits equal the unmerged adapter's within `tolerance`, then save.

    `merge` is the method's merge (e.g. QLoRA folds the adapter into dequantised weights); default merge_and_unload.
    A base held in bfloat16/float16 (model.dtype) is upcast to float32 first, exactly, and the merge done there:
    merge_and_unload adds the adapter's delta in the weights' own dtype, and bf16's 8-bit mantissa rounds most of a
    LoRA delta away (the quickstart's merged logits were 0.75 off). Both probes then compute in float32, so the check
    proves the merge; the merged folder is float32.
    """
    if _half_precision_base(peft_model):
        peft_model = peft_model.to(torch.float32)
    before = probe_logits(peft_model, tokenizer)
    merged = merge(peft_model) if merge is not None else peft_model.merge_and_unload()
    after = probe_logits(merged, tokenizer)
    max_diff = float((before - after).abs().max())
    if max_diff > tolerance:
        raise RunError(f"merged logits differ from adapter logits by {max_diff:.2e} (> {tolerance:.0e}); not saved")
    save_merged(merged, tokenizer, out_dir, lineage)
    return {"path": str(out_dir), "max_abs_logit_diff_vs_adapter": max_diff, "model": merged}
