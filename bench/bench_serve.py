"""Serving benchmark: the real bundled SmolLM2-135M-Instruct behind `tuneforge serve`, with 3 LoRA adapters.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_serve.py [--requests 32] [--clients 16] [--max-tokens 24]
                                                            [--mode both|continuous|batch]

Starts the server in-process on 127.0.0.1 (free port) with 3 random-initialised LoRA adapters (r 16 on q/k/v/o,
init_lora_weights=False, so each one really changes the answers) and drives it with the `openai` async client:

- sequential: one request at a time (the same server and engine, so batching never has a second request);
- concurrent, single adapter: `--clients` clients, all on one adapter;
- concurrent, mixed adapters: the same clients, requests spread over the 3 adapters (PEFT mixed-adapter batches).

Prints aggregate generated tokens/s, p50/p95 latency and the two goals of issue 9: >= 4x the sequential throughput
at 16 clients, and mixed adapters >= 0.8x single-adapter. Requests are greedy with a fixed max_tokens and varied
prompts; generated tokens come from each response's `usage`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
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


def make_adapters(base_path: str, folder: Path, count: int = 3) -> list[Path]:
    import torch
    from peft import LoraConfig, get_peft_model

    from tuneforge.models.loading import load_model
    from tuneforge.models.sources import resolve_model

    paths = []
    resolved = resolve_model(base_path)
    for index in range(count):
        torch.manual_seed(100 + index)
        model = get_peft_model(load_model(resolved, "float32"),
                               LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                          init_lora_weights=False))
        # Random B at the default init scale makes a 135M model babble; scale it down so answers stay fluent-ish.
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.mul_(0.01)
        path = folder / f"adapter{index + 1}"
        model.save_pretrained(path)
        paths.append(path)
    return paths


async def drive(base: str, key: str, models: list[str], requests: int, clients: int, max_tokens: int) -> dict:
    import openai

    latencies, tokens = [], []
    counter = iter(range(requests))

    async def client_loop():
        c = openai.AsyncOpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=3600)
        for index in counter:
            started = time.perf_counter()
            answer = await c.chat.completions.create(
                model=models[index % len(models)], max_tokens=max_tokens, temperature=0,
                messages=[{"role": "user", "content": f"Write two sentences about {TOPICS[index % len(TOPICS)]}."}])
            latencies.append(time.perf_counter() - started)
            tokens.append(answer.usage.completion_tokens)
        await c.close()

    started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(clients)))
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {"requests": len(latencies), "clients": clients, "wall_s": round(wall, 2),
            "generated_tokens": sum(tokens), "tokens_per_s": round(sum(tokens) / wall, 2),
            "p50_s": round(statistics.median(ordered), 2),
            "p95_s": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32, help="requests per concurrent scenario")
    parser.add_argument("--sequential-requests", type=int, default=6)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--base", default="smollm2-135m-instruct")
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--mode", choices=["continuous", "batch", "both"], default="both",
                        help="serve config batching.continuous on, off, or both side by side (one server each)")
    args = parser.parse_args()

    import os

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from tests.serve_helpers import running_server
    from tuneforge.serve.config import ServeConfig

    modes = ["continuous", "batch"] if args.mode == "both" else [args.mode]
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        adapters = make_adapters(args.base, Path(tmp))
        for mode in modes:
            cfg = ServeConfig(base=args.base, state_dir=str(Path(tmp) / f"state-{mode}"),
                              adapters=[{"name": p.name, "path": str(p)} for p in adapters],
                              batching={"max_batch_size": args.clients, "window_ms": 20,
                                        "continuous": mode == "continuous"},
                              request_log={"enabled": True})
            with running_server(cfg, timeout=600) as (base, _admin, app):
                key = app.state.tuneforge.store.create_key("bench")[1]
                names = [p.name for p in adapters]
                asyncio.run(drive(base, key, names[:1], 2, 1, 4))  # warm-up
                report[mode] = {
                    "sequential (1 client, 1 adapter)": asyncio.run(
                        drive(base, key, names[:1], args.sequential_requests, 1, args.max_tokens)),
                    f"{args.clients} clients, single adapter": asyncio.run(
                        drive(base, key, names[:1], args.requests, args.clients, args.max_tokens)),
                    f"{args.clients} clients, 3 adapters mixed": asyncio.run(
                        drive(base, key, names, args.requests, args.clients, args.max_tokens)),
                }
    print(f"SmolLM2-135M-Instruct fp32, torch threads {torch.get_num_threads()}, max_tokens {args.max_tokens}, "
          "greedy\n")
    print("| batching | scenario | requests | wall s | generated tokens | tokens/s | p50 s | p95 s |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, results in report.items():
        for name, r in results.items():
            print(f"| {mode} | {name} | {r['requests']} | {r['wall_s']} | {r['generated_tokens']} | "
                  f"{r['tokens_per_s']} | {r['p50_s']} | {r['p95_s']} |")
    summary = {}
    for mode, results in report.items():
        sequential, single, mixed = results.values()
        speedup = single["tokens_per_s"] / sequential["tokens_per_s"]
        ratio = mixed["tokens_per_s"] / single["tokens_per_s"]
        summary[mode] = {"speedup": speedup, "mixed_ratio": ratio}
        print(f"\n{mode}: concurrent / sequential throughput: {speedup:.2f}x (goal >= 4x); "
              f"mixed / single adapter throughput: {ratio:.2f}x (goal >= 0.8x)")
    if args.out:
        Path(args.out).write_text(json.dumps({"results": report, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
