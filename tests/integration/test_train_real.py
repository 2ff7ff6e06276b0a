"""The runner on the real bundled SmolLM2-135M-Instruct: behaviour that only real weights show."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.config.schema import RunConfig

pytestmark = pytest.mark.slow


def test_short_lora_run_lowers_eval_loss_and_teaches_the_format_and_the_stop(real_model_dir: Path, tmp_path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.recipes.finetune import train_from_config

    cfg = RunConfig.model_validate({
        "model": {"source": str(real_model_dir)},
        "data": {"train": "quickstart:train.jsonl", "validation": "quickstart:validation.jsonl",
                 "test": "quickstart:test.jsonl", "max_length": 256},
        "training": {"max_steps": 8, "batch_size": 8, "learning_rate": 3e-4, "eval_every_steps": 8,
                     "save_every_steps": 8},
        "eval": {"max_items": 12, "max_new_tokens": 40, "batch_size": 12, "bootstrap_samples": 1000},
        "output": {"dir": str(tmp_path / "runs"), "name": "real"},
    })
    run = train_from_config(cfg)
    results = json.loads((run.path / "eval" / "results.json").read_text())
    base_loss = results["models"]["base"]["validation_loss"]["loss"]
    tuned_loss = results["models"]["tuned"]["validation_loss"]["loss"]
    assert tuned_loss < 0.7 * base_loss, (base_loss, tuned_loss)
    # The base model answers in prose or fenced JSON; after 8 steps the tuned one emits the bare JSON object
    # and stops at <|im_end|> (the end-of-turn token is trained), so most answers parse with the right keys.
    tuned_fields = results["models"]["tuned"]["summary"]["json_fields"]
    assert tuned_fields > results["models"]["base"]["summary"]["json_fields"]
    assert tuned_fields >= 0.5

    merged = AutoModelForCausalLM.from_pretrained(run.path / "merged")
    tokenizer = AutoTokenizer.from_pretrained(run.path / "merged")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": 'Extract the contact as JSON with keys "name", "company", "city".\n\n'
                                     "Ada Byron of Analytic Engines lives in London."}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = merged.generate(**prompt, max_new_tokens=40, do_sample=False)
    new_tokens = out[0, prompt["input_ids"].shape[1]:].tolist()
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in new_tokens, tokenizer.decode(new_tokens)
