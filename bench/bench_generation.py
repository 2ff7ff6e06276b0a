"""Evaluation generation: the inference engine against the greedy loop it replaced, side by side in one process.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_generation.py [--items 100] [--repeats 3] [--adapter DIR]
    python bench/bench_generation.py --batch-size 20 --engine-batch-size 100 --engine-batch-tokens 16384  # the
                                                  # old loop at the quickstart's old 20 vs the engine at a token budget
    python bench/bench_generation.py --dtype bfloat16 ...           # a bf16 base (answers then depend on the batch)

The quickstart's evaluation workload: the bundled SmolLM2-135M-Instruct, the quickstart's test items (the first
`--items`), max_new_tokens and batch size from src/tuneforge/assets/quickstart/quickstart.yaml. Paths, run in
turn within every repeat (the order rotates between repeats; medians are reported):

- old base / old tuned: `generate_greedy` as it was at git b63eb89 (before issue 8), copied below as the baseline;
- engine base / engine tuned: `InferenceEngine.answer`, as a training run's evaluation calls it.

"base" is the model with its adapter switched off (`disable_adapter`, what the training run does before training);
"tuned" is the same PEFT model with the adapter on. The adapter is `--adapter DIR` (e.g. runs/quickstart/adapter
after `tuneforge quickstart`), else runs/quickstart/adapter if it exists, else a random LoRA (r 16 on q/k/v/o,
nonzero B scaled down), which times the same but is not a trained model (the output says which one ran).

Prints items/s per path, engine/old ratios and whether the predictions are identical item for item.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


# ------------------------------------------------------------------------------------------------------------------
# Baseline: the pre-issue-8 greedy loop (src/tuneforge/eval/generation.py at git b63eb89, progress bar removed), kept
# here only to measure the engine against it. Nothing in tuneforge calls it.
def _old_stop_token_ids(model, tokenizer) -> list[int]:
    ids: list[int] = []
    candidates = [getattr(tokenizer, "eos_token_id", None)]
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    candidates.extend(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])
    for token_id in candidates:
        if token_id is not None and int(token_id) not in ids:
            ids.append(int(token_id))
    return ids


def old_generate_greedy(model, tokenizer, prompts: list[list[int]], *, max_new_tokens: int,
                        batch_size: int = 16) -> list[str]:
    """generate_greedy of b63eb89: length-sorted left-padded batches through `model.generate`, cut at stop ids."""
    import torch
    from transformers import GenerationConfig

    stop_ids = _old_stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    stop_set = set(stop_ids)
    gen_config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, use_cache=True,
                                  eos_token_id=stop_ids or None, pad_token_id=pad_id)
    device = next(model.parameters()).device
    texts: list[str | None] = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    from tuneforge.models.inference import bare_generation_defaults  # the same context manager the old loop used

    was_training = model.training
    model.eval()
    try:
        with bare_generation_defaults(model), torch.no_grad():
            for start in range(0, len(order), batch_size):
                batch_indices = order[start:start + batch_size]
                width = max(len(prompts[i]) for i in batch_indices)
                input_ids = torch.full((len(batch_indices), width), pad_id, dtype=torch.long)
                attention_mask = torch.zeros((len(batch_indices), width), dtype=torch.long)
                for row, index in enumerate(batch_indices):
                    prompt = prompts[index]
                    input_ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
                    attention_mask[row, width - len(prompt):] = 1
                output = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                        generation_config=gen_config)
                new_tokens = output[:, width:].tolist()
                for row, index in enumerate(batch_indices):
                    kept = new_tokens[row]
                    for position, token_id in enumerate(kept):
                        if token_id in stop_set:
                            kept = kept[:position]
                            break
                    texts[index] = tokenizer.decode(kept, skip_special_tokens=True)
    finally:
        model.train(was_training)
    return [text if text is not None else "" for text in texts]


# ------------------------------------------------------------------------------------------------------------------
def load(adapter: str | None, workdir: Path, dtype: str = "float32"):
    import torch
    import yaml
    from peft import LoraConfig, PeftModel, get_peft_model

    from tuneforge.data.formats import load_dataset_file
    from tuneforge.eval.tasks import items_from_loaded
    from tuneforge.models.loading import load_model, load_tokenizer
    from tuneforge.models.sources import resolve_model

    config = yaml.safe_load((ROOT / "src/tuneforge/assets/quickstart/quickstart.yaml").read_text())
    resolved = resolve_model(config["model"]["source"])
    tokenizer = load_tokenizer(resolved)
    base = load_model(resolved, dtype)
    default = ROOT / "runs/quickstart/adapter"
    path = Path(adapter) if adapter else (default if (default / "adapter_config.json").is_file() else None)
    if path is not None:
        model, which = PeftModel.from_pretrained(base, str(path)), f"trained adapter {path}"
    else:
        torch.manual_seed(0)
        model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj",
                                                                                      "o_proj"],
                                                init_lora_weights=False))
        with torch.no_grad():  # random B at full scale makes the model babble; smaller keeps answers plausible
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.mul_(0.01)
        which = "RANDOM LoRA r16 q/k/v/o (no trained adapter found; timing only, not a trained model)"
    items = items_from_loaded(load_dataset_file(config["data"]["test"], "auto"))
    return model, tokenizer, items, config["eval"], which


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100, help="first N quickstart test items (default all 100)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of every path (median reported)")
    parser.add_argument("--adapter", help="PEFT adapter folder for the tuned side (default: runs/quickstart/adapter)")
    parser.add_argument("--batch-size", type=int, help="override the quickstart's eval.batch_size")
    parser.add_argument("--engine-batch-size", type=int, help="engine paths only: prompts per batch (default: the "
                        "same as the old loop's)")
    parser.add_argument("--engine-batch-tokens", type=int, help="engine paths only: KV-cache positions per batch "
                        "(eval.batch_tokens)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="the base's weights dtype (the quickstart's `model.dtype: auto` is bfloat16 on a CPU "
                        "with AVX512-BF16/AMX)")
    args = parser.parse_args()

    import torch

    from tuneforge.models.inference import InferenceEngine

    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer, items, eval_cfg, which = load(args.adapter, Path(tmp), args.dtype)
    items = items[: args.items]
    max_new, batch = eval_cfg["max_new_tokens"], args.batch_size or eval_cfg["batch_size"]
    engine = InferenceEngine(model, tokenizer, name="bench")
    prompts = [engine.prompt_ids(item) for item in items]  # the old loop took token ids, rendered the same way
    engine_batch = args.engine_batch_size or batch
    engine.batch_tokens = args.engine_batch_tokens
    print(f"{len(items)} items, {args.dtype} base, max_new_tokens {max_new}, batch_size {batch} (engine: "
          f"{engine_batch}, batch_tokens "
          f"{engine.batch_tokens}), torch threads {torch.get_num_threads()}, tuned side: {which}")

    def run(path: str) -> list[str]:
        side = nullcontext() if path.endswith("tuned") else model.disable_adapter()
        with side:
            if path.startswith("old"):
                return old_generate_greedy(model, tokenizer, prompts, max_new_tokens=max_new, batch_size=batch)
            return engine.answer(items, max_new_tokens=max_new, batch_size=engine_batch, progress=False)

    paths = ["old base", "engine base", "old tuned", "engine tuned"]
    seconds: dict[str, list[float]] = {p: [] for p in paths}
    predictions: dict[str, list[list[str]]] = {p: [] for p in paths}
    for repeat in range(args.repeats):
        shift = repeat % len(paths)
        for path in paths[shift:] + paths[:shift]:
            started = time.perf_counter()
            texts = run(path)
            seconds[path].append(time.perf_counter() - started)
            predictions[path].append(texts)
            print(f"  repeat {repeat + 1}: {path:<12} {seconds[path][-1]:7.1f} s", flush=True)

    print(f"\n{'path':<13}{'median s':>10}{'items/s':>10}   runs (s)")
    rate = {}
    for path in paths:
        median = statistics.median(seconds[path])
        rate[path] = len(items) / median
        print(f"{path:<13}{median:>10.1f}{rate[path]:>10.2f}   {', '.join(f'{s:.1f}' for s in seconds[path])}")
    all_identical = True
    for side in ("base", "tuned"):
        old, new = predictions[f"old {side}"], predictions[f"engine {side}"]
        differing = [items[i]["id"] for i in range(len(items)) if any(run[i] != old[0][i] for run in old + new)]
        identical = not differing
        all_identical &= identical
        print(f"{side:<6} engine/old items/s {rate[f'engine {side}'] / rate[f'old {side}']:.2f}x   predictions "
              f"identical: {'yes' if identical else 'NO'}" + (f" (differ on {len(differing)}: {differing[:5]})"
                                                              if differing else ""))
    engine_total = sum(statistics.median(seconds[p]) for p in paths if p.startswith("engine"))
    old_total = sum(statistics.median(seconds[p]) for p in paths if p.startswith("old"))
    print(f"both sides: engine/old items/s {old_total / engine_total:.2f}x (issue 14 goal: >= 2x with identical "
          "predictions)")
    import resource

    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    sys.exit(0 if all_identical else 1)


if __name__ == "__main__":
    main()
