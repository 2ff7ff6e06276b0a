"""Accelerators the planner knows by name: memory, dense matmul throughput and memory bandwidth from the vendors'
datasheets, plus how much of that peak a fine-tuning step reaches (an assumption, said as such).

Sources (dense figures, i.e. without the 2:4 sparsity doubling the datasheets also print):
  - a100-80gb: NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB): 80 GB HBM2e, 2,039 GB/s, BF16 312 TFLOPS,
    FP32 19.5 TFLOPS (TF32 156, not used unless enabled).
  - h100: NVIDIA H100 Tensor Core GPU datasheet (SXM5): 80 GB HBM3, 3.35 TB/s, BF16 989 TFLOPS, FP32 67 TFLOPS.
  - h200: NVIDIA H200 Tensor Core GPU datasheet (SXM): 141 GB HBM3e, 4.8 TB/s, BF16 989 TFLOPS, FP32 67 TFLOPS.
  - l4: NVIDIA L4 Tensor Core GPU datasheet: 24 GB GDDR6, 300 GB/s, BF16 121 TFLOPS, FP32 30.3 TFLOPS.
  - rtx4090: NVIDIA Ada Lovelace architecture whitepaper (GeForce RTX 4090): 24 GB GDDR6X, 1,008 GB/s,
    BF16 tensor with FP32 accumulate 165.2 TFLOPS, FP32 82.6 TFLOPS.
"""
from __future__ import annotations

from dataclasses import dataclass

from tuneforge.errors import ConfigError

GB = 1e9


@dataclass(frozen=True)
class Device:
    name: str
    kind: str                      # "gpu" or "cpu"
    memory_bytes: float
    bf16_flops: float              # dense matmul FLOP/s at bf16/fp16
    fp32_flops: float              # dense matmul FLOP/s at fp32
    bandwidth: float               # bytes/s
    source: str
    #: Share of peak matmul throughput a training step reaches on the model's matmuls (MFU). Small models reach
    #: little of a large GPU; 0.35 is a typical mid-size fine-tuning figure, not a measurement of this model.
    matmul_efficiency: float = 0.35
    #: Share of `matmul_efficiency` the weight-gradient matmuls (dW = x^T dy, full fine-tuning) reach.
    weight_grad_efficiency: float = 1.0
    #: Share of `matmul_efficiency` a step reaches when its matmuls run in bf16/fp16. On a CPU the large matmul
    #: the calibration times gains far more from bf16 than a training step does (casts around every autocast
    #: matmul, the fp32 LoRA branch, small shapes): the quickstart stepped 1.4x faster in bf16 where the calibrated
    #: matmul was 2.5x faster.
    half_efficiency: float = 1.0
    #: Fixed cost per step outside the matmuls (kernel launches, optimizer loop, Python), seconds per layer.
    step_overhead_per_layer_s: float = 0.0015
    #: Memory the runtime holds before any tensor (CUDA context and allocator, or the Python process with its
    #: libraries on a CPU), bytes.
    runtime_bytes: float = 0.6 * GB
    calibrated: bool = False

    def flops(self, dtype: str) -> float:
        return self.fp32_flops if dtype == "float32" else self.bf16_flops

    def step_flops(self, dtype: str) -> float:
        """Matmul FLOP/s a training step reaches at `dtype`."""
        half = 1.0 if dtype == "float32" else self.half_efficiency
        return self.flops(dtype) * self.matmul_efficiency * half


DEVICES: dict[str, Device] = {
    "a100-80gb": Device("a100-80gb", "gpu", 80 * GB, 312e12, 19.5e12, 2039 * GB,
                        "NVIDIA A100 datasheet (SXM4 80GB), dense"),
    "h100": Device("h100", "gpu", 80 * GB, 989e12, 67e12, 3350 * GB, "NVIDIA H100 datasheet (SXM5), dense"),
    "h200": Device("h200", "gpu", 141 * GB, 989e12, 67e12, 4800 * GB, "NVIDIA H200 datasheet (SXM), dense"),
    "l4": Device("l4", "gpu", 24 * GB, 121e12, 30.3e12, 300 * GB, "NVIDIA L4 datasheet, dense"),
    "rtx4090": Device("rtx4090", "gpu", 24 * GB, 165.2e12, 82.6e12, 1008 * GB,
                      "NVIDIA Ada Lovelace whitepaper (RTX 4090), BF16 with FP32 accumulate, dense"),
}


def get_device(name: str) -> Device:
    """A named accelerator, or `this` (this machine, calibrated by a micro-benchmark and cached)."""
    key = name.strip().lower()
    if key == "this":
        from tuneforge.plan.calibrate import this_machine

        return this_machine()
    if key not in DEVICES:
        raise ConfigError(f"--device {name!r} is not a known device",
                          hint=f"use this or one of: {', '.join(DEVICES)}")
    return DEVICES[key]
