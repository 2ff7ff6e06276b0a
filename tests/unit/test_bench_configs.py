"""The benchmark scripts' tuneforge sides are valid configs: a side that the schema refuses fails only after minutes
of benchmarking (bench_vs_trl's no-checkpointing sides did, once the quickstart shipped every_n_layers: 2)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tuneforge.config.loader import load_config

ROOT = Path(__file__).resolve().parents[2]


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH_VS_TRL = _bench("bench_vs_trl")


@pytest.mark.parametrize("side", sorted(BENCH_VS_TRL.SIDE_OVERRIDES))
def test_every_bench_vs_trl_side_is_a_valid_config(side, tmp_path):
    command = BENCH_VS_TRL.tuneforge_command(20, 42, tmp_path, side)
    config, overrides = command[command.index("train") + 1], command[command.index("train") + 2:]
    cfg = load_config(config, overrides)
    assert cfg.training.max_steps == 20 and cfg.training.batch_size == 8
    if "nogc" in side or side in ("tuneforge-fp32", "tuneforge-amp", "tuneforge-bf16w", "tuneforge-reference"):
        assert not cfg.training.gradient_checkpointing
    if side.startswith("tuneforge-fp32") or side == "tuneforge-reference":
        assert (cfg.training.frozen_base_dtype, cfg.training.mixed_precision) == ("model", "no")
