"""Planned vs measured: `tuneforge plan` against short real runs of the shipped configs on this machine.

    OMP_NUM_THREADS=2 python bench/bench_plan.py [--steps 6] [--configs quickstart,full,qlora,dpo] [--out FILE]

Each config runs as `tuneforge train CONFIG training.max_steps=N ...` in its own process (no base evaluation, one
test item, no merged export, no mid-run evaluation or checkpoint), while this script samples the resident memory of
the process tree every 0.1 s with psutil. Measured:
  - peak RSS of the whole run (what decides whether a run fits) and of the training phase alone (from the first
    step's metrics line to the last one);
  - seconds per step from metrics.jsonl: (elapsed at the last step - elapsed at step 1) / (steps - 1), so the first
    step's warm-up is not counted (the plan is the steady state).
The plan is the one `tuneforge plan --json` prints for the same config and overrides. Ratios are measured / planned.
Figures on a machine shared with other work are loaded-machine figures: memory stays comparable, time does not.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "quickstart": "src/tuneforge/assets/quickstart/quickstart.yaml",
    "full": "examples/full-finetune.yaml",
    "qlora": "examples/methods-qlora.yaml",
    "dpo": "examples/objective-dpo.yaml",
}
GIB = 1024 ** 3
TRAIN_FLAGS = ["--no-plan-check"]  # the bench measures what the plan says, so it must not be refused


def short_run_overrides(steps: int, out_dir: str, name: str) -> list[str]:
    return [f"training.max_steps={steps}", "training.logging_steps=1", "training.eval_every_steps=100000",
            "training.save_every_steps=100000", "eval.compare_base=false", "eval.max_items=1",
            "export.merged=false", "export.card=false", f"output.dir={out_dir}", f"output.name={name}",
            "output.overwrite=true"]


def tree_rss(proc) -> int:
    import psutil

    total = 0
    try:
        for p in [proc, *proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


def measure(config: str, overrides: list[str], run_dir: Path, env: dict) -> dict:
    import psutil

    cmd = [sys.executable, "-m", "tuneforge.cli.main", "train", config, *overrides, *TRAIN_FLAGS]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ps = psutil.Process(proc.pid)
    peaks = {"run": 0, "train": 0}
    done = threading.Event()
    metrics = run_dir / "metrics.jsonl"

    def sample():
        while not done.is_set():
            rss = tree_rss(ps)
            peaks["run"] = max(peaks["run"], rss)
            manifest = run_dir / "manifest.json"
            in_training = metrics.exists() and '"train_s"' not in _read(manifest)
            if in_training:
                peaks["train"] = max(peaks["train"], rss)
            time.sleep(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    output = proc.communicate()[0]
    done.set()
    thread.join()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{config} failed ({proc.returncode}):\n{output[-3000:]}")
    steps = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    steps = [s for s in steps if "loss" in s and "elapsed_s" in s]
    per_step = ((steps[-1]["elapsed_s"] - steps[0]["elapsed_s"]) / (steps[-1]["step"] - steps[0]["step"])
                if len(steps) > 1 else None)
    return {"peak_rss_gib": peaks["run"] / GIB, "train_peak_rss_gib": peaks["train"] / GIB,
            "seconds_per_step": per_step, "wall_s": wall, "steps": len(steps)}


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def planned(config: str, overrides: list[str], env: dict) -> dict:
    cmd = [sys.executable, "-m", "tuneforge.cli.main", "plan", config, *overrides, "--json"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"plan {config} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--out", type=Path, default=None, help="Also write the rows as JSON here.")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TOKENIZERS_PARALLELISM": "false"}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as out_dir:
        for label in args.configs.split(","):
            config = CONFIGS[label]
            overrides = short_run_overrides(args.steps, out_dir, f"bench-{label}")
            plan = planned(config, overrides, env)["this"]
            got = measure(config, overrides, Path(out_dir) / f"bench-{label}", env)
            row = {"config": label, "planned_peak_gib": plan["peak_memory_gib"],
                   "measured_peak_gib": got["peak_rss_gib"], "measured_train_peak_gib": got["train_peak_rss_gib"],
                   "planned_s_per_step": plan["seconds_per_step"], "measured_s_per_step": got["seconds_per_step"],
                   "planned_tokens_per_step": plan["tokens_per_step"], "wall_s": got["wall_s"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    load = os.getloadavg()[0]
    print(f"\nplanned vs measured, {args.steps}-step runs, this machine (load average {load:.1f} on "
          f"{os.cpu_count()} cores: loaded-machine figures, time is off under load, memory stays comparable)")
    print(f"{'config':<11}{'peak plan':>10}{'measured':>10}{'ratio':>7}{'train pk':>10}{'ratio':>7}"
          f"{'s/step plan':>12}{'measured':>10}{'ratio':>7}")
    for r in rows:
        ratio = r["measured_peak_gib"] / r["planned_peak_gib"]
        tratio = r["measured_train_peak_gib"] / r["planned_peak_gib"] if r["measured_train_peak_gib"] else 0.0
        sratio = (r["measured_s_per_step"] or 0.0) / r["planned_s_per_step"]
        print(f"{r['config']:<11}{r['planned_peak_gib']:>9.2f}G{r['measured_peak_gib']:>9.2f}G{ratio:>7.2f}"
              f"{r['measured_train_peak_gib']:>9.2f}G{tratio:>7.2f}"
              f"{r['planned_s_per_step']:>12.2f}{r['measured_s_per_step'] or 0:>10.2f}{sratio:>7.2f}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
