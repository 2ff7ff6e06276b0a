"""Per-method cost and effect on the real SmolLM2-135M-Instruct: s/step, peak RSS, eval loss before/after.

    OMP_NUM_THREADS=2 python bench/bench_methods.py [--steps 5] [--batch 4] [--methods lora,qlora,...]

Each method runs in its own subprocess so peak RSS is its own. Plain torch loop (AdamW at the method's default
learning rate), batches of quickstart train rows, eval loss = token-weighted assistant-token loss on 8 validation
rows (computed through the model's own labels path, so prompt tuning's virtual tokens are handled by PEFT).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

SPECS = {
    "full": {"name": "full"},
    "lora": {"name": "lora"},
    "dora": {"name": "lora", "lora": {"use_dora": True}},
    "rslora-all-linear": {"name": "lora", "lora": {"use_rslora": True, "target": "all-linear"}},
    "qlora": {"name": "qlora"},
    "ia3": {"name": "ia3"},
    "prefix": {"name": "prefix"},
    "prompt": {"name": "prompt"},
    "freeze-last4": {"name": "freeze", "freeze": {"train_last_n_blocks": 4}},
}


def child(label: str, steps: int, batch_size: int) -> dict:
    import torch

    from tuneforge.config.schema import DataConfig, RunConfig
    from tuneforge.methods import get_method
    from tuneforge.models.loading import load_tokenizer
    from tuneforge.models.sources import resolve_model
    from tuneforge.train.data_prep import prepare_data

    torch.manual_seed(0)
    resolved = resolve_model("smollm2-135m-instruct")
    tokenizer = load_tokenizer(resolved)
    data = DataConfig(train="quickstart:train.jsonl", validation="quickstart:validation.jsonl", max_length=256)
    prepared = prepare_data(data, tokenizer)
    train_rows, eval_rows = prepared.rendered["train"], prepared.rendered["validation"][:8]
    cfg = RunConfig(data=data, method=SPECS[label])
    method = get_method(cfg.method)
    model = method.apply(method.load_base(resolved, "float32"))
    params = method.trainable_parameters(model)

    from tuneforge.models.inference import right_pad

    def batch(rows):
        ids, mask, trained = right_pad([(r["input_ids"], r["assistant_masks"]) for r in rows], tokenizer.pad_token_id)
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.where(trained, ids, -100)}

    @torch.no_grad()
    def loss_on(rows):
        model.eval()
        value = float(model(**batch(rows)).loss)
        model.train()
        return value

    before = loss_on(eval_rows)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.effective_learning_rate())
    model.train()
    started = time.perf_counter()
    for step in range(steps):
        model(**batch(train_rows[step * batch_size:(step + 1) * batch_size])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    seconds = time.perf_counter() - started
    after = loss_on(eval_rows)
    return {"method": label, "trainable": params["trainable"], "steps": steps, "s_per_step": seconds / steps,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "lr": cfg.effective_learning_rate(), "eval_before": before, "eval_after": after}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--methods", default=",".join(SPECS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.steps, args.batch)))
        return
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
          f"torch threads = OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    rows = []
    for label in args.methods.split(","):
        out = subprocess.run([sys.executable, __file__, "--child", label, "--steps", str(args.steps),
                              "--batch", str(args.batch)], capture_output=True, text=True)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"{label}: failed\n{out.stderr[-2000:]}")
            continue
        rows.append(json.loads(line[len("RESULT "):]))
        print(f"  done {label}", flush=True)
    header = (f"{'method':<18} {'trainable':>11} {'lr':>7} {'steps':>5} {'s/step':>7} {'peak RSS':>9} "
              f"{'eval before':>11} {'eval after':>10}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['method']:<18} {r['trainable']:>11,} {r['lr']:>7.0e} {r['steps']:>5} {r['s_per_step']:>7.2f} "
              f"{r['peak_rss_gib']:>7.2f} G {r['eval_before']:>11.4f} {r['eval_after']:>10.4f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
