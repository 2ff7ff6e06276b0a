"""Scale benchmark for the whole `tuneforge data audit` command (load, tokenise, duplicates, PII, leakage).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_audit_full.py [--rows 100000] [--eval 1000]

Writes deterministic chat rows of ~300 tokens (bench_audit_scale's generator, with its planted duplicates,
PII and leaks) to a temp JSONL, then runs the real CLI code path in a child process:

    tuneforge data audit train.jsonl --model smollm2-135m-instruct --max-length 320 --test test.jsonl

The child keeps the generator's temporaries out of the peak RSS. Prints seconds per stage (from
audit.json), total wall time, rows/s, peak RSS of the audit and the load average while it ran.
Budget: 100k rows in under 120 s on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--eval", type=int, default=1000)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--max-length", type=int, default=320)
    args = parser.parse_args()

    from bench_audit_scale import make_rows

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rows, evals, _ = make_rows(args.rows, args.eval)
        train, test = Path(tmp) / "train.jsonl", Path(tmp) / "test.jsonl"
        for path, part in ((train, rows), (test, evals)):
            with open(path, "w", encoding="utf-8") as f:
                for row in part:
                    f.write(json.dumps(row) + "\n")
        del rows, evals
        print(f"generated {args.rows:,} + {args.eval:,} rows ({train.stat().st_size / 2**20:.0f} MiB) "
              f"in {time.perf_counter() - t0:.1f}s")
        out = Path(tmp) / "audit"
        cmd = [sys.executable, "-m", "tuneforge.cli.main", "data", "audit", str(train), "--model", args.model,
               "--max-length", str(args.max_length), "--test", str(test), "--out", str(out)]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        load_before = os.getloadavg()
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env)
        wall = time.perf_counter() - start
        load_after = os.getloadavg()
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        report = json.loads((out / "audit.json").read_text())
        for stage, seconds in report["timings_s"].items():
            print(f"{stage:<12} {seconds:8.2f} s")
        tokens = report.get("tokens", {})
        print(f"total (process, incl. imports) {wall:.1f} s   {args.rows / wall:,.0f} rows/s   "
              f"peak RSS {peak:,.0f} MiB   load avg before {load_before[0]:.2f} after {load_after[0]:.2f}")
        print(f"findings: exact groups {report['duplicates']['exact_groups']}, near clusters "
              f"{report['duplicates']['near_clusters']}, PII {report['pii']['counts']}, leakage pairs "
              f"{report['leakage']['exact_pairs']}+{report['leakage']['ngram_pairs']}, over max length "
              f"{tokens.get('over_max_length')}, lost trained share {tokens.get('lost_trained_share')}, "
              f"formula check {tokens.get('formula_check')}")
        print("PASS" if wall < 120 else "OVER BUDGET (120 s)")


if __name__ == "__main__":
    main()
