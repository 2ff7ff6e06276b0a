"""This machine as a planner device: a few-second micro-benchmark (matmul throughput, memory bandwidth), cached.

The result is cached under the tuneforge cache (TUNEFORGE_CACHE, else ~/.cache/tuneforge) in plan/, keyed by a
fingerprint of what decides the numbers (CPU model, core count, torch threads, total memory, GPU name, torch
version), so a different machine, or the same one with another OMP_NUM_THREADS, measures again. On a machine
shared with other work the benchmark measures what is left over at that moment, so a calibration taken while the
1-minute load average is at least half the core count is used for that plan only and never cached (a cached busy
figure once made every later plan of the quickstart 2.7x too slow); `tuneforge plan --recalibrate` measures again.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path

from tuneforge.plan.devices import GB, Device

CALIBRATION_VERSION = 1
#: Memory a CPU training process holds before any model tensor: the interpreter with torch, transformers, trl,
#: peft and datasets imported (measured on this project's stack: 0.75-0.8 GiB RSS).
CPU_RUNTIME_BYTES = 0.8 * 1024 ** 3
#: CUDA context + allocator slack of a training process (typical 0.5-1 GB on recent drivers).
GPU_RUNTIME_BYTES = 0.8 * GB


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fingerprint() -> dict:
    import psutil
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "memory_bytes": psutil.virtual_memory().total, "gpu": gpu, "torch": torch.__version__,
            "machine": platform.machine(), "version": CALIBRATION_VERSION}


def cache_path(print_: dict) -> Path:
    from tuneforge.models.cache import cache_root

    digest = hashlib.sha256(json.dumps(print_, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "plan" / f"calibration-{digest}.json"


def _timed(fn, min_seconds: float) -> float:
    """Seconds per call of fn, repeated for at least min_seconds after one warm-up call."""
    fn()
    calls, started = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return elapsed / calls


def benchmark(device: str = "cpu", seconds: float = 0.6) -> dict:
    """Matmul FLOP/s (fp32 and bf16) and copy bandwidth (bytes/s) on `device`."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    # Shapes of a small decoder's projections (tokens x hidden @ hidden x 2*hidden), not a square best case; small
    # enough that bf16 on a CPU without bf16 instructions still takes well under a second.
    n, k, m = (512, 1024, 2048) if device == "cpu" else (8192, 8192, 8192)
    out = {}
    for dtype in ("float32", "bfloat16"):
        a = torch.randn(n, k, dtype=getattr(torch, dtype), device=device)
        b = torch.randn(k, m, dtype=getattr(torch, dtype), device=device)

        def matmul(a=a, b=b):
            torch.mm(a, b)
            sync()

        out[f"{dtype}_flops"] = 2 * n * k * m / _timed(matmul, seconds)
    size = (64 if device == "cpu" else 1024) * 1024 * 1024 // 4
    src = torch.empty(size, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)

    def copy():
        dst.copy_(src)
        sync()

    out["bandwidth"] = 2 * size * 4 / _timed(copy, seconds)  # a copy reads and writes every byte
    return out


def _load_average() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def busy(load: float | None) -> bool:
    """Whether a 1-minute load average means other work holds at least half of this machine's cores."""
    return load is not None and load >= 0.5 * (os.cpu_count() or 1)


def this_machine(*, recalibrate: bool = False, console=None) -> Device:
    """This machine's Device: cached calibration for its fingerprint, else measured now (a few seconds)."""
    import psutil
    import torch

    from tuneforge.atomic import write_json_atomic

    print_ = fingerprint()
    path = cache_path(print_)
    record = None
    if path.is_file() and not recalibrate:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = None  # a damaged cache entry is measured again
    if record is None:
        on_gpu = torch.cuda.is_available()
        load = _load_average()
        if console is not None:
            console.print("[bold]plan[/] calibrating this machine (matmul + memory bandwidth, a few seconds; "
                          f"cached in {path.parent})")
        measured = benchmark("cuda" if on_gpu else "cpu")
        record = {"fingerprint": print_, "measured": measured, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                            time.gmtime()),
                  "load_average": load}
        if busy(load):
            if console is not None:
                console.print(f"[yellow]plan[/] this machine is busy (load average {load:.1f} on "
                              f"{os.cpu_count()} cores): the calibration measures what is left over, so seconds per "
                              "step are pessimistic; it is not cached, the next plan measures again")
        else:
            write_json_atomic(path, record)
    measured = record["measured"]
    if torch.cuda.is_available():
        memory = torch.cuda.get_device_properties(0).total_memory
        return Device("this", "gpu", memory, measured["bfloat16_flops"], measured["float32_flops"],
                      measured["bandwidth"], f"measured on {print_['gpu']} ({record['measured_at']})",
                      matmul_efficiency=0.6, runtime_bytes=GPU_RUNTIME_BYTES, calibrated=True)
    load = record.get("load_average")
    return Device(
        "this", "cpu", float(psutil.virtual_memory().total), measured["bfloat16_flops"], measured["float32_flops"],
        measured["bandwidth"],
        f"measured on {print_['cpu']}, {print_['threads']} torch threads ({record['measured_at']}"
        + (f", load average {load:.1f}" if load is not None else "") + ")",
        # A training step reaches ~60% of the throughput of one large matmul (many small matmuls), and full
        # fine-tuning's weight-gradient matmuls (dW = x^T dy, transposed layouts) ~55% of that: set from the
        # quickstart, QLoRA, DPO and full fine-tuning runs of bench/bench_plan.py on a 2-core EPYC (2026-12-03);
        # bf16 steps reach ~56% of that (the quickstart with a bf16 base and autocast, bench_plan.py, 2026-12-03).
        matmul_efficiency=0.62, weight_grad_efficiency=0.55, half_efficiency=0.56, step_overhead_per_layer_s=0.004,
        runtime_bytes=CPU_RUNTIME_BYTES, calibrated=True)
