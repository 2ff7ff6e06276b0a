"""Mixed-adapter LoRA batches: PEFT's per-adapter loop against the stacked path (integrations/peft_mixed_lora.py).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_mixed_lora.py [--base tiny|PATH] [--adapters 3] [--rank 16]
        [--batch 16] [--max-new-tokens 16] [--repeats 3]

`--base tiny` (default, a few seconds): the 2-layer random Llama of the unit tests with SmolLM2's tokenizer; any other
value is a model source (`smollm2-135m-instruct`, a folder, ...; heavier, for a quiet machine). `--adapters` random
LoRA adapters (r `--rank` on q/k/v/o, init_lora_weights=False, B scaled down as in bench_serve.py) are attached to one
InferenceEngine, and `--batch` greedy prompts run as one batch, in turn (order rotating per repeat, medians kept):

- single adapter: every row on the first adapter; mixed: rows spread round-robin over all adapters;
- each with `stacked_lora` on (the stacked path) and off (PEFT's own `_mixed_batch_forward`).

Prints generated tokens/s per case, mixed/single ratios, and whether every path gave the same tokens.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

TOPICS = ["the sea", "a bicycle", "coffee", "mountains", "a library", "rain", "the moon", "bread", "a train",
          "winter", "a garden", "music", "a city at night", "the desert", "a lighthouse", "autumn leaves"]


def load(base: str):
    from transformers import AutoTokenizer

    if base == "tiny":
        from tests.tiny_models import TOKENIZER_DIR, build_tiny_model

        return build_tiny_model, AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    from tuneforge.models.loading import load_model, load_tokenizer
    from tuneforge.models.sources import resolve_model

    resolved = resolve_model(base)
    return (lambda: load_model(resolved, "float32")), load_tokenizer(resolved)


def make_adapters(build, folder: Path, count: int, rank: int) -> list[Path]:
    import torch
    from peft import LoraConfig, get_peft_model

    paths = []
    for index in range(count):
        model = build()
        torch.manual_seed(100 + index)
        model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, init_lora_weights=False,
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.mul_(0.01)
        paths.append(folder / f"adapter{index + 1}")
        model.save_pretrained(paths[-1])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="tiny")
    parser.add_argument("--adapters", type=int, default=3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from tuneforge.models.inference import InferenceEngine

    build, tokenizer = load(args.base)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_adapters(build, Path(tmp), args.adapters, args.rank)
        engine = InferenceEngine(build(), tokenizer)
        names = [p.name for p in paths]
        for name, path in zip(names, paths):
            engine.add_adapter(name, str(path))
    prompts = [engine.prompt_ids([{"role": "user", "content": f"Write one sentence about {TOPICS[i % 16]}."}])
               for i in range(args.batch)]
    cases = {f"{kind} {path}": ([names[0]] * args.batch if kind == "single" else
                                [names[i % len(names)] for i in range(args.batch)], path == "stacked")
             for kind in ("single", "mixed") for path in ("stacked", "peft")}
    rates: dict[str, list[float]] = {case: [] for case in cases}
    tokens: dict[str, list[list[int]]] = {}

    def run(case: str) -> None:
        adapters, stacked = cases[case]
        engine.stacked_lora = stacked
        engine._adapters_changed()  # patch (or give back to PEFT) the LoRA layers
        start = time.perf_counter()
        out = engine.generate(prompts, adapters=adapters, max_new_tokens=args.max_new_tokens,
                              batch_size=args.batch, progress=False)
        elapsed = time.perf_counter() - start
        rates[case].append(sum(len(c.token_ids) for c in out) / elapsed)
        tokens[case] = [c.token_ids for c in out]

    for case in cases:  # warm-up
        run(case)
    order = list(cases)
    for repeat in range(args.repeats):
        for case in order[repeat % len(order):] + order[: repeat % len(order)]:
            run(case)
    print(f"base {args.base}, {args.adapters} adapters r{args.rank} on q/k/v/o, batch {args.batch}, "
          f"{args.max_new_tokens} new tokens, median of {args.repeats}")
    median = {case: statistics.median(values) for case, values in rates.items()}
    for case, value in median.items():
        print(f"  {case:16s} {value:9.1f} tok/s")
    for path in ("stacked", "peft"):
        print(f"  mixed/single ({path}): {median[f'mixed {path}'] / median[f'single {path}']:.2f}x")
    print(f"  stacked/peft mixed: {median['mixed stacked'] / median['mixed peft']:.2f}x")
    same = all(tokens[f"{kind} stacked"] == tokens[f"{kind} peft"] for kind in ("single", "mixed"))
    print(f"  same tokens on both paths: {same}")


if __name__ == "__main__":
    main()
