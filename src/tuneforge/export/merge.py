"""Export: PEFT adapters and merged safetensors folders that plain transformers loads.

A merged folder carries the weights, the tokenizer, the tokenizer's *original* chat template (the derived
training template is byte-identical in output, but users and servers expect the model's own) and a
generation config whose EOS is the end-of-turn token, so generation stops where training taught it to.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from tuneforge.errors import RunError


def _atomic_dir(final: Path):
    """A temp folder next to `final`; `commit(tmp)` swaps it into place so readers never see half a folder."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))

    def commit() -> Path:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return final

    return tmp, commit


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
    tmp, commit = _atomic_dir(path)
    peft_model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return commit()


def save_merged(model, tokenizer, path: Path, lineage: dict | None = None) -> Path:
    """Save a plain (already merged) transformers model with tokenizer, chat template and generation config."""
    tmp, commit = _atomic_dir(path)
    if getattr(model, "generation_config", None) is not None:  # reward models (score heads) do not generate
        model.generation_config = _generation_config(model, tokenizer)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if lineage:
        (tmp / "tuneforge-lineage.json").write_text(json.dumps(lineage, indent=2, default=str) + "\n")
    return commit()


@torch.no_grad()
def probe_logits(model, tokenizer, text: str = "Extract the contact as JSON.\n\nAda Byron works at Analytic Engines in London.") -> torch.Tensor:
    was_training = model.training
    model.eval()
    batch = tokenizer([text], return_tensors="pt")
    device = next(model.parameters()).device
    logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()
    model.train(was_training)
    return logits


def merge_adapter_folder(base_model, adapter_dir: Path, tokenizer, out_dir: Path, lineage: dict | None = None,
                         merge=None) -> dict:
    """Load an adapter onto `base_model`, check merged == adapter logits, and save the merged folder."""
    from peft import PeftModel

    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise RunError(f"{adapter_dir}: no adapter_config.json; this run has no PEFT adapter to merge")
    peft_model = PeftModel.from_pretrained(base_model, str(adapter_dir))
    return merge_and_save(peft_model, tokenizer, out_dir, lineage, merge=merge)


def merge_and_save(peft_model, tokenizer, out_dir: Path, lineage: dict | None = None, tolerance: float = 1e-4,
                   merge=None) -> dict:
    """Merge a PEFT model, prove its logits equal the unmerged adapter's within `tolerance`, then save.

    `merge` is the method's merge (e.g. QLoRA folds the adapter into dequantised weights); default merge_and_unload.
    """
    before = probe_logits(peft_model, tokenizer)
    merged = merge(peft_model) if merge is not None else peft_model.merge_and_unload()
    after = probe_logits(merged, tokenizer)
    max_diff = float((before - after).abs().max())
    if max_diff > tolerance:
        raise RunError(f"merged logits differ from adapter logits by {max_diff:.2e} (> {tolerance:.0e}); not saved")
    save_merged(merged, tokenizer, out_dir, lineage)
    return {"path": str(out_dir), "max_abs_logit_diff_vs_adapter": max_diff, "model": merged}
