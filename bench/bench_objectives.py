"""Run every objective once on the real SmolLM2-135M-Instruct with LoRA for a few steps and print a table.

    OMP_NUM_THREADS=2 python bench/bench_objectives.py [--steps 3] [--objectives dpo,kto,...] [--out bench-runs]

Each objective runs in its own process (examples/objective-<name>.yaml with small overrides) so that peak RSS is
that objective's own. Columns: steps, s/step (train time / steps), peak RSS, and the objective's held-out metric
before (base) and after (tuned): eval loss, preference/reward accuracy, or the generation headline metric.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

OBJECTIVES = ["cpt", "multitask", "dpo", "kto", "orpo", "reward", "rl"]
CHILD = r"""
import json, resource, sys
from tuneforge.config.loader import load_config
from tuneforge.recipes.finetune import train_from_config
cfg = load_config(sys.argv[1], sys.argv[3:])
run = train_from_config(cfg, config_path=sys.argv[1])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
json.dump({"run": str(run.path), "peak_rss_gib": peak}, open(sys.argv[2], "w"))
"""


def headline(entry: dict | None, objective: str) -> str:
    if not entry:
        return "-"
    metrics = entry.get("objective_metrics") or {}
    for key in ("reward_accuracy", "preference_accuracy"):
        if key in metrics:
            return f"{key.split('_')[0]} acc {metrics[key]:.3f}"
    if entry.get("eval_loss"):
        return f"eval loss {entry['eval_loss']['loss']:.4f}"
    if entry.get("summary"):
        name, value = next(iter(entry["summary"].items()))
        return f"{name} {value:.3f}"
    return "-"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    parser.add_argument("--out", default="bench-runs")
    args = parser.parse_args()
    rows = []
    load = os.getloadavg()
    for name in args.objectives.split(","):
        overrides = [f"training.max_steps={args.steps}", "training.batch_size=2", "training.eval_every_steps=1000",
                     "training.save_every_steps=1000", "eval.max_items=8", "eval.max_new_tokens=32",
                     "eval.bootstrap_samples=1000", f"output.dir={args.out}", f"output.name={name}",
                     "output.overwrite=true", "export.merged=false"]
        if name == "rl":
            overrides += ["objective.rl.num_generations=2", "objective.rl.max_completion_length=24"]
        result_file = Path(args.out) / f"{name}.bench.json"
        result_file.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CHILD, f"examples/objective-{name}.yaml", str(result_file),
                               *overrides], capture_output=True, text=True)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            rows.append((name, "-", "-", "-", "FAILED", proc.stderr.strip().splitlines()[-1][:80], f"{wall:.0f}"))
            continue
        info = json.loads(result_file.read_text())
        run = Path(info["run"])
        manifest = json.loads((run / "manifest.json").read_text())
        results_path = run / "eval" / "results.json"
        results = json.loads(results_path.read_text()) if results_path.is_file() else {}
        models = results.get("models", {})
        steps = manifest["training"]["steps"]
        rows.append((name, str(steps), f"{manifest['timings']['train_s'] / max(steps, 1):.2f}",
                     f"{info['peak_rss_gib']:.2f}", headline(models.get("base"), name),
                     headline(models.get("tuned"), name), f"{wall:.0f}"))
        print(" | ".join(rows[-1]), flush=True)
    header = ("objective", "steps", "s/step", "peak RSS GiB", "before (base)", "after (tuned)", "wall s")
    print(f"\nSmolLM2-135M-Instruct + LoRA r16, batch 2, {os.cpu_count()} CPUs, load average at start "
          f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}, at end {os.getloadavg()[0]:.2f}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
