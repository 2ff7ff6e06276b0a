"""`tuneforge train` against TRL's SFTTrainer + PEFT with TRL's defaults, side by side: tokens/s, peak RSS, eval loss.

    OMP_NUM_THREADS=2 python bench/bench_vs_trl.py --steps 20 --repeats 3
    python bench/bench_vs_trl.py --steps 3 --repeats 1                          # a smoke run
    python bench/bench_vs_trl.py --sides tuneforge,tuneforge-reference --steps 10  # this repo's loss path A/B

The setup on every side: LoRA r16 (alpha 32, dropout 0.05) on q/k/v/o of the bundled SmolLM2-135M-Instruct, the
quickstart's train split, batch 8, max_length 256, the same number of optimizer steps, the same seed and learning
rate (the quickstart's 2e-4; TRL's own default would be 2e-5, which would make the eval-loss comparison meaningless).

- tuneforge: the real CLI, `tuneforge train src/tuneforge/assets/quickstart/quickstart.yaml` with overrides that
  leave out what TRL's run does not do (base-model evaluation, test-set generation, exports; no evaluation or
  checkpoint inside the N steps), everything else as shipped: `auto` precision (a bf16 frozen base under bf16
  autocast where the device computes bf16 natively) and checkpointing of every 2nd decoder layer. Other sides
  (SIDE_OVERRIDES) drop the checkpointing (`tuneforge-nogc`), checkpoint every layer (`tuneforge-gc`), or pin a
  precision without checkpointing: float32 (`tuneforge-fp32`), TRL's float32 weights under bf16 autocast
  (`tuneforge-amp`), a bf16 base without autocast (`tuneforge-bf16w`), and the reference loss path in float32
  (`tuneforge-reference`: the LM head over every position).
- trl: `SFTTrainer(model=<model folder>, train_dataset=<the quickstart messages>, peft_config=LoraConfig(...),
  args=SFTConfig(...))`: everything else is TRL's default (float32 weights, bf16 autocast, gradient
  checkpointing, loss on every token of the conversation, padding to the longest row, no length grouping). On a
  machine without a GPU it also passes use_cpu=True, without which TrainingArguments refuses TRL's bf16 default;
  --trl-fp32 turns bf16 off.

Each run is its own subprocess, sides alternate (the first side swaps every repeat), and medians are reported.
Figures, each counted the same way on both sides:
- tokens/s: non-padding tokens (attention_mask sum) of the micro-batches the trainer trained on, counted in
  `Trainer.training_step` by tuneforge's own counter (never evaluation or prefetched batches), divided by the time
  the `trainer.train()` loop spent training: its wall time less the evaluations and checkpoint saves in it
  (`train.callbacks.TrainingClock`, the same callback on both sides; tuneforge evaluates and saves a resumable
  checkpoint at the last step, TRL saves its adapter). tuneforge: the manifest's `training.tokens_per_second`.
- peak RSS: the largest sum of resident memory over the child's process tree, sampled every 50 ms by this process
  from the child's start (imports and model load included) to its exit.
- eval loss: `tuneforge.eval.loss.eval_loss` (token-weighted cross-entropy over the assistant tokens) on the
  quickstart validation split rendered by tuneforge, after training; the same function and rows on both sides.
Timings on a loaded machine are not a comparison: run it on a quiet one.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "src" / "tuneforge" / "assets" / "quickstart"
LEARNING_RATE = 2e-4
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
#: Each tuneforge side: the quickstart run plus these overrides. The quickstart ships `training.frozen_base_dtype:
#: auto` and `training.mixed_precision: auto` (on a device with native bf16: the frozen base held in bf16 while
#: training, under bf16 autocast; float32 without autocast elsewhere; the run prints which) and checkpointing of every
#: 2nd decoder layer.
NO_GC = ["training.gradient_checkpointing=false", "training.gradient_checkpointing_every_n_layers=1"]
FP32 = ["training.frozen_base_dtype=model", "training.mixed_precision=no", *NO_GC]
SIDE_OVERRIDES = {
    "tuneforge": [],
    # As shipped without checkpointing: faster, more memory.
    "tuneforge-nogc": NO_GC,
    # As shipped with every layer checkpointed (TRL's kind of checkpointing).
    "tuneforge-gc": ["training.gradient_checkpointing_every_n_layers=1"],
    # Float32 weights and matmuls, no checkpointing (the schema's defaults; the quickstart's before 2026-12-03).
    "tuneforge-fp32": FP32,
    # What the quickstart runs on a device without native bf16: float32, every 2nd layer checkpointed.
    "tuneforge-fp32-gc2": ["training.frozen_base_dtype=model", "training.mixed_precision=no"],
    # TRL's precision without its checkpointing: float32 weights under bf16 autocast.
    "tuneforge-amp": ["training.frozen_base_dtype=model", "training.mixed_precision=bf16", *NO_GC],
    # A bf16 frozen base without autocast (the LoRA branch computes in float32), no checkpointing.
    "tuneforge-bf16w": ["model.dtype=bfloat16", "training.mixed_precision=no", *NO_GC],
    # The reference loss path (TRL's LM head over every position) in float32, no checkpointing.
    "tuneforge-reference": [*FP32, "training.loss_at_trained_positions=false"],
}
SIDES = ("trl", *SIDE_OVERRIDES)


# ---------------------------------------------------------------------------- children


def tuneforge_command(steps: int, seed: int, out: Path, side: str = "tuneforge") -> list[str]:
    overrides = [
        f"training.max_steps={steps}", f"training.seed={seed}", f"training.learning_rate={LEARNING_RATE}",
        "training.batch_size=8", "data.max_length=256",
        # No evaluation or checkpoint inside the timed steps (TRL's defaults do neither within 500 steps).
        "training.eval_every_steps=1000000", "training.save_every_steps=1000000",
        # What TRL's run does not do: base evaluation, test-set generation, exports.
        "eval.compare_base=false", "data.test=null",
        "export.adapter=false", "export.merged=false", "export.card=false",
        f"output.dir={out}", "output.name=bench",
    ]
    overrides += SIDE_OVERRIDES[side]
    return [sys.executable, "-m", "tuneforge.cli.main", "train", str(QUICKSTART / "quickstart.yaml"), *overrides]


def read_tuneforge(out: Path) -> dict:
    manifest = json.loads((out / "bench" / "manifest.json").read_text())
    results = json.loads((out / "bench" / "eval" / "results.json").read_text())
    training = manifest["training"]
    return {"real_tokens": training["real_tokens"], "train_s": training["training_s"], "steps": training["steps"],
            "eval_loss": results["models"]["tuned"]["summary"]["validation_loss"]}


def validation_rows(tokenizer):
    from tuneforge.config.schema import DataConfig
    from tuneforge.train.data_prep import prepare_data

    data = DataConfig(train=str(QUICKSTART / "train.jsonl"), validation=str(QUICKSTART / "validation.jsonl"),
                      max_length=256)
    return prepare_data(data, tokenizer).rendered["validation"]


def trl_child(steps: int, seed: int, out: Path, fp32: bool = False) -> dict:
    """TRL's SFTTrainer + PEFT as its documentation shows it, defaults kept; writes out/result.json."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from tuneforge.eval.loss import eval_loss
    from tuneforge.models.sources import resolve_model
    from tuneforge.train.callbacks import count_training_tokens

    model_path = resolve_model("smollm2-135m-instruct").path
    rows = [json.loads(line) for line in (QUICKSTART / "train.jsonl").read_text().splitlines() if line.strip()]
    dataset = Dataset.from_list([{"messages": row["messages"]} for row in rows])
    import torch

    # use_cpu: without it TrainingArguments refuses TRL's default bf16=True on a machine without a GPU.
    extra = {"use_cpu": True} if not torch.cuda.is_available() else {}
    if fp32:
        extra["bf16"] = False
    args = SFTConfig(output_dir=str(out / "trl"), max_steps=steps, per_device_train_batch_size=8, max_length=256,
                     learning_rate=LEARNING_RATE, seed=seed, report_to="none", disable_tqdm=True, **extra)
    trainer = SFTTrainer(model=str(model_path), args=args, train_dataset=dataset,
                         peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA))
    counter = count_training_tokens(trainer)
    trainer.train()
    train_s = counter.clock.training_seconds()
    loss = eval_loss(trainer.model, validation_rows(trainer.processing_class), batch_size=8, progress=False)
    return {"real_tokens": counter.real_tokens, "train_s": train_s, "steps": trainer.state.global_step,
            "eval_loss": loss["loss"]}


# ---------------------------------------------------------------------------- parent


def tree_rss(processes) -> int:
    import psutil

    total = 0
    for p in processes:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass  # a child that just exited
    return total


def run_side(side: str, steps: int, seed: int, env: dict, keep_log: Path | None, trl_fp32: bool = False) -> dict:
    import psutil

    with tempfile.TemporaryDirectory(prefix=f"bench-{side}-") as tmp:
        out = Path(tmp)
        if side == "trl":
            command = [sys.executable, __file__, "--child", "trl", "--steps", str(steps), "--seed", str(seed),
                       "--child-out", str(out), *(["--trl-fp32"] if trl_fp32 else [])]
        else:
            command = tuneforge_command(steps, seed, out, side)
        log = open(keep_log, "a") if keep_log else subprocess.DEVNULL
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        proc = psutil.Process(child.pid)
        timeline: list[tuple[float, int]] = []

        def sample():
            tree, count = [proc], 0
            while child.poll() is None:
                if count % 20 == 0:  # listing descendants scans every process: once a second is enough
                    try:
                        tree = [proc, *proc.children(recursive=True)]
                    except psutil.Error:
                        break
                timeline.append((round(time.perf_counter() - started, 3), tree_rss(tree)))
                count += 1
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = child.wait()
        sampler.join()
        wall = time.perf_counter() - started
        if keep_log:
            log.close()
        if code != 0:
            raise SystemExit(f"{side} run failed with exit code {code}" + (f"; see {keep_log}" if keep_log else
                                                                        "; rerun with --log FILE to see why"))
        figures = read_tuneforge(out) if side != "trl" else json.loads((out / "result.json").read_text())
    peak_t, peak = max(timeline, key=lambda sample: sample[1]) if timeline else (0.0, 0)
    return {**figures, "side": side, "wall_s": round(wall, 2), "peak_rss_gib": peak / 2**30, "peak_at_s": peak_t,
            "tokens_per_s": figures["real_tokens"] / max(figures["train_s"], 1e-9), "timeline": timeline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side (alternating)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sides", default="tuneforge,trl", help=f"comma-separated, among {', '.join(SIDES)}; the "
                        "first is the numerator of the ratios")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for every child (default: "
                        "inherit)")
    parser.add_argument("--json", type=Path, default=None, help="write every run (with its RSS timeline) here")
    parser.add_argument("--log", type=Path, default=None, help="append the children's output to this file")
    parser.add_argument("--trl-fp32", action="store_true", help="TRL side: bf16=False (its default is bf16 "
                        "autocast, also on CPU)")
    parser.add_argument("--child", choices=["trl"], help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = trl_child(args.steps, args.seed, args.child_out, fp32=args.trl_fp32)
        (args.child_out / "result.json").write_text(json.dumps(result))
        return

    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = [s for s in sides if s not in SIDES]
    if unknown or len(sides) < 1:
        parser.error(f"--sides: unknown {unknown}; choose among {', '.join(SIDES)}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    runs = []
    for repeat in range(args.repeats):
        order = sides if repeat % 2 == 0 else sides[::-1]
        for side in order:
            run = run_side(side, args.steps, args.seed, env, args.log, trl_fp32=args.trl_fp32)
            run["repeat"] = repeat
            runs.append(run)
            print(f"repeat {repeat} {side:20s} {run['tokens_per_s']:8.1f} tok/s ({run['real_tokens']} tokens in "
                  f"{run['train_s']:.1f} s, {run['steps']} steps)  peak RSS {run['peak_rss_gib']:.2f} GiB at "
                  f"{run['peak_at_s']:.1f} s  eval loss {run['eval_loss']:.4f}  wall {run['wall_s']:.1f} s",
                  flush=True)
            if args.json:  # after every run, so an interrupted benchmark keeps what it measured
                args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs},
                                                indent=1))

    medians = {}
    for side in sides:
        mine = [r for r in runs if r["side"] == side]
        medians[side] = {key: statistics.median(r[key] for r in mine)
                         for key in ("tokens_per_s", "peak_rss_gib", "eval_loss", "train_s", "wall_s")}
    print(f"\nmedians over {args.repeats} repeat(s), {args.steps} steps, batch 8, max_length 256, seed {args.seed}:")
    print(f"{'side':22s} {'tokens/s':>10s} {'peak RSS GiB':>13s} {'eval loss':>10s} {'train s':>8s} {'wall s':>8s}")
    for side, m in medians.items():
        print(f"{side:22s} {m['tokens_per_s']:10.1f} {m['peak_rss_gib']:13.2f} {m['eval_loss']:10.4f} "
              f"{m['train_s']:8.1f} {m['wall_s']:8.1f}")
    first = sides[0]
    for other in sides[1:]:
        a, b = medians[first], medians[other]
        print(f"{first}/{other}: tokens/s x{a['tokens_per_s'] / b['tokens_per_s']:.2f}, peak RSS "
              f"x{a['peak_rss_gib'] / b['peak_rss_gib']:.2f}, eval loss {a['eval_loss']:.4f} vs {b['eval_loss']:.4f}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs,
                                         "medians": medians}, indent=1))
        print(f"every run, with its RSS timeline (seconds, bytes): {args.json}")


if __name__ == "__main__":
    main()
