"""The runner on the real bundled SmolLM2-135M-Instruct: behaviour that only real weights show."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tuneforge.config.schema import RunConfig

# One short LoRA run on the quickstart data is shared by the training checks and the GGUF export checks below; the
# xdist group keeps both tests on one worker so the run is trained once (dev.py runs pytest with --dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("real-lora-run")]


@pytest.fixture(scope="module")
def real_run(real_model_dir: Path, tmp_path_factory):
    from tuneforge.recipes.finetune import train_from_config

    tmp_path = tmp_path_factory.mktemp("real-run")
    cfg = RunConfig.model_validate({
        "model": {"source": str(real_model_dir)},
        "data": {"train": "quickstart:train.jsonl", "validation": "quickstart:validation.jsonl",
                 "test": "quickstart:test.jsonl", "max_length": 256},
        "training": {"max_steps": 8, "batch_size": 8, "learning_rate": 3e-4, "eval_every_steps": 8,
                     "save_every_steps": 8},
        "eval": {"max_items": 12, "max_new_tokens": 40, "batch_size": 12, "bootstrap_samples": 1000},
        "output": {"dir": str(tmp_path / "runs"), "name": "real"},
    })
    return train_from_config(cfg)


def test_short_lora_run_lowers_eval_loss_and_teaches_the_format_and_the_stop(real_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = real_run
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


@pytest.mark.llamacpp
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                    reason="llama-cpp-python is not installed (the dev extra builds it: python3 dev.py setup)")
def test_gguf_exports_of_the_tuned_model_pass_every_llama_cpp_check(real_run, tmp_path: Path):
    """The tuned model (the run's merged folder) as f16 and q8_0 GGUF files, each checked in llama.cpp itself:
    1,000+ strings tokenised alike, llama.cpp's chat formatting equal to the HF template, greedy answers to the
    test prompts (f16: identical tokens to the HF model with the file's f16 weights; q8_0: top-1 agreement >= 99%
    along the HF continuation), and every answer that stops does so at <|im_end|> in llama.cpp too. This run's
    f16 file once failed against the unrounded fp32 model on a near-tie ({" vs {\\n): the reference must be the
    weights the file holds."""
    from tuneforge.console import make_console
    from tuneforge.eval.tasks import items_from_dataset
    from tuneforge.export.gguf import read_metadata
    from tuneforge.recipes.export import export_gguf

    items = items_from_dataset("quickstart:test.jsonl", max_items=60)
    records = export_gguf(real_run.path / "merged", tmp_path / "gguf", ["f16", "q8_0"], items=items,
                          provenance={"run": "real", "base_model": "smollm2-135m-instruct"},
                          console=make_console(quiet=True))
    f16, q8 = records["f16"]["checks"], records["q8_0"]["checks"]
    for checks in (f16, q8):
        assert checks["tokens"]["equal"] == checks["tokens"]["strings"] >= 1000
        assert checks["chat_template"]["equal"] == checks["chat_template"]["conversations"]
        assert checks["stop"]["end_of_turn"] == "<|im_end|>"
    generation = f16["generation"]
    assert generation["identical"] == generation["prompts"] >= 8
    # The tuned model ends its answers: most checked answers stop within the budget, all at <|im_end|> in llama.cpp.
    assert generation["stops_matched"] == generation["stops_expected"] >= generation["prompts"] // 2
    assert q8["generation"]["top1_agreement"] >= 0.99
    assert records["q8_0"]["bytes"] < 0.6 * records["f16"]["bytes"]
    meta = read_metadata(records["f16"]["path"])
    assert meta["tokenizer.ggml.eos_token_id"] == 2 and meta["tuneforge.run"] == "real"
