"""The LM head + loss alone: TRL 1.16's CPU path (every position) against tuneforge's trained positions only.

    OMP_NUM_THREADS=2 python bench/bench_lm_head.py [--batch 8] [--length 120] [--trained-share 0.28] [--repeats 3]

SmolLM2-135M's head shapes (hidden 576, vocab 49,152, frozen weight as under LoRA), random hidden states and labels
with the given share of trained positions (the quickstart trains 28%). TRL's path is its own `ChunkedLogProbFunction`
called as SFTTrainer calls it off CUDA (every position, entropy and top-1 folded in); ours is
`tuneforge.train.trained_positions`. Prints the largest gradient difference, the median forward+backward time and
the peak RSS growth (sampled every 2 ms) of each. Timings on a loaded machine are not a comparison.
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time

import psutil
import torch
from trl.kernels.chunked_logprob import ChunkedLogProbFunction
from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

from tuneforge.train.trained_positions import _chunk_statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=120, help="padded row length")
    parser.add_argument("--trained-share", type=float, default=0.28)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    hidden_size, vocab = 576, 49152
    head = torch.nn.Linear(hidden_size, vocab, bias=False).requires_grad_(False)
    hidden = torch.randn(args.batch, args.length - 1, hidden_size)
    labels = torch.randint(0, vocab, (args.batch, args.length - 1))
    labels[:, : int((1 - args.trained_share) * (args.length - 1))] = -100  # the prompt
    mask = labels != -100

    def trl_every_position():
        h = hidden.clone().requires_grad_(True)
        out = ChunkedLogProbFunction.apply(h.reshape(-1, hidden_size), head.weight, None,
                                           labels.clamp(min=0).reshape(-1), 1.0, _CHUNKED_LOGPROB_CHUNK_SIZE, None,
                                           1.0, ("log_probs", "entropy", "is_top1"))
        (-out[0].view(mask.shape).masked_fill(~mask, 0).sum() / mask.sum()).backward()
        return h.grad

    def trained_positions():
        h = hidden.clone().requires_grad_(True)
        nll, _, _ = _chunk_statistics(head, h[mask], labels[mask])
        (nll / mask.sum()).backward()
        return h.grad

    print(f"{mask.numel()} positions, {int(mask.sum())} trained; largest gradient difference "
          f"{(trl_every_position() - trained_positions()).abs().max().item():.2e}")
    process, peak = psutil.Process(), [0]

    def sample():
        while True:
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.002)

    threading.Thread(target=sample, daemon=True).start()
    for name, fn in [("trl, every position", trl_every_position), ("trained positions", trained_positions)] * 2:
        start_rss = peak[0] = process.memory_info().rss
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        time.sleep(0.05)
        print(f"{name:22s} median {statistics.median(times):7.3f} s   peak RSS growth "
              f"{(peak[0] - start_rss) / 2**20:6.0f} MiB")


if __name__ == "__main__":
    main()
