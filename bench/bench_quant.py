"""What quantisation costs: a run's merged fp32 model against its GGUF exports in llama.cpp, on the run's test set.

    .venv/bin/python bench/bench_quant.py [RUN] [--quant f16 --quant q8_0 --quant q4_0] [--data FILE] [--metric ...]

RUN defaults to runs/quickstart (after `python3 dev.py quickstart`). GGUF files missing from RUN/gguf are exported
first with `tuneforge export RUN --format gguf --quant Q` (which refuses a file that fails a llama.cpp check). Then,
for each quant, `tuneforge eval RUN/gguf/model-Q.gguf --engine llamacpp --base RUN/merged` scores the GGUF file as
llama.cpp runs it against the fp32 merged model on the same items (paired bootstrap CIs), with the run's eval
settings (metrics, max_new_tokens). The table printed at the end is read from those results.json files
(RUN/eval/quant-Q/): metric means, delta vs merged with its 95% CI, file size and llama.cpp generation tokens/s,
next to the merged model's items/s in transformers. Run with nothing else on the machine: tokens/s are timings.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def tuneforge(*args: str) -> None:
    cmd = [sys.executable, "-m", "tuneforge.cli.main", *args]
    print("+ tuneforge", " ".join(args), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", default="runs/quickstart")
    parser.add_argument("--quant", action="append", help="f16, q8_0, q4_0 (repeat; default all three)")
    parser.add_argument("--data", help="test data (default: the run config's data.test)")
    parser.add_argument("--metric", action="append", help="metrics (default: the run config's eval.metrics)")
    args = parser.parse_args()
    quants = args.quant or ["f16", "q8_0", "q4_0"]

    from tuneforge.config.loader import load_config

    run = Path(args.run)
    cfg = load_config(run / "config.yaml")
    data = args.data or cfg.data.test
    if not data:
        sys.exit(f"{run}: the run has no data.test; pass --data")
    metrics = args.metric or list(cfg.eval.metrics)
    merged = run / "merged"
    if not (merged / "config.json").exists():
        tuneforge("export", str(run))
    missing = [q for q in quants if not (run / "gguf" / f"model-{q}.gguf").exists()]
    if missing:
        tuneforge("export", str(run), "--format", "gguf", *[a for q in missing for a in ("--quant", q)])

    rows = []
    for quant in quants:
        out = run / "eval" / f"quant-{quant}"
        tuneforge("eval", str(run / "gguf" / f"model-{quant}.gguf"), "--engine", "llamacpp", "--base", str(merged),
                  "--data", str(data), "--metric", ",".join(metrics), "--max-new-tokens", str(cfg.eval.max_new_tokens),
                  "--out", str(out), "--no-report")
        rows.append((quant, json.loads((out / "results.json").read_text())))

    first = rows[0][1]
    base = first["models"]["base"]
    print(f"\n{run}: fp32 merged (transformers) vs GGUF in llama.cpp on {first['n_items']} items; "
          "delta = GGUF - merged, 95% paired bootstrap CI")
    head = "| model | " + " | ".join(f"{m} | delta [95% CI]" for m in metrics) + " | file MiB | gen tok/s |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    cells = [f"{base['summary'][m]:.3f} | -" for m in metrics]
    merged_mib = sum(p.stat().st_size for p in merged.glob("*.safetensors")) / 2**20
    print(f"| fp32 merged | {' | '.join(cells)} | {merged_mib:.0f} | ({base['items_per_second']:.2f} items/s) |")
    for quant, results in rows:
        tuned, comp, engine = results["models"]["tuned"], results["comparison"], results.get("engine", {})
        cells = [f"{tuned['summary'][m]:.3f} | {comp[m]['delta']:+.3f} [{comp[m]['ci_low']:+.3f}, "
                 f"{comp[m]['ci_high']:+.3f}]" for m in metrics]
        print(f"| {quant} | {' | '.join(cells)} | {engine.get('file_bytes', 0) / 2**20:.0f} | "
              f"{engine.get('tokens_per_second', float('nan')):.1f} |")


if __name__ == "__main__":
    main()
