"""`tuneforge train --nproc/--nnodes`: the torchrun command line, rank handling, and the shipped FSDP/ZeRO configs.

No GPU here: the FSDP and DeepSpeed configs are checked for structure and against what transformers' Trainer
integration fills in, without importing deepspeed (it is not installable usefully on a CPU machine).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tuneforge.config.loader import load_config
from tuneforge.errors import ConfigError, RunError
from tuneforge.train import launch
from tuneforge.train.launch import LaunchPlan, torchrun_command

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "distributed"


def test_single_node_command_uses_standalone_torchrun_and_fixes_the_run_name():
    command = torchrun_command("cfg.yaml", ["training.max_steps=5"], LaunchPlan(nproc=2), run_name="r1")
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert command[3:6] == ["--nproc_per_node", "2", "--standalone"]
    assert command[6:] == ["-m", "tuneforge.cli.main", "train", "cfg.yaml", "training.max_steps=5", "output.name=r1"]
    assert "accelerate" not in " ".join(command)  # `accelerate launch --cpu` would silently run one process


def test_multi_node_command_and_resume():
    plan = LaunchPlan(nproc=8, nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29511)
    command = torchrun_command("c.yaml", [], plan, run_name="big", resume=True)
    joined = " ".join(command)
    assert "--nproc_per_node 8 --nnodes 2 --node_rank 1 --master_addr 10.0.0.1 --master_port 29511" in joined
    assert "--standalone" not in command
    assert command[-2:] == ["output.name=big", "--resume"]
    with pytest.raises(ConfigError, match="master-addr"):
        torchrun_command("c.yaml", [], LaunchPlan(nproc=8, nnodes=2), run_name="big")
    with pytest.raises(ConfigError, match="node-rank"):
        torchrun_command("c.yaml", [], LaunchPlan(nproc=8, nnodes=2, node_rank=2, master_addr="h"), run_name="b")


def test_run_name_is_resolved_once_for_all_processes(tmp_path):
    cfg = load_config(EXAMPLES / "ddp-lora.yaml", ["output.name=null", f"output.dir={tmp_path}"])
    name = launch.resolve_run_name(cfg, "x/ddp-lora.yaml", resume=False, plan=LaunchPlan(nproc=2))
    assert re.fullmatch(r"ddp-lora-\d{8}-\d{6}", name)
    with pytest.raises(ConfigError, match="needs output.name"):
        launch.resolve_run_name(cfg, "ddp-lora.yaml", resume=False,
                                plan=LaunchPlan(nproc=2, nnodes=2, master_addr="h"))
    (tmp_path / name).mkdir()
    (tmp_path / name / "config.yaml").write_text("{}")
    assert launch.resolve_run_name(cfg, "ddp-lora.yaml", resume=True, plan=LaunchPlan(nproc=2)) == name
    with pytest.raises(RunError):
        launch.resolve_run_name(cfg, "other.yaml", resume=True, plan=LaunchPlan(nproc=2))


def test_ranks_come_from_torchrun_environment(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launch.is_main_process() and launch.world_size() == 1
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert not launch.is_main_process() and launch.world_size() == 4


def test_nproc_inside_torchrun_is_refused(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")
    cfg = load_config(EXAMPLES / "ddp-lora.yaml")
    with pytest.raises(ConfigError, match="inside a process that torchrun"):
        launch.launch_distributed(cfg, "c.yaml", [], LaunchPlan(nproc=2), resume=False)


def test_follower_ranks_write_nothing(tmp_path, monkeypatch):
    from rich.console import Console

    monkeypatch.setenv("RANK", "1")
    cfg = load_config(EXAMPLES / "ddp-lora.yaml", [f"output.dir={tmp_path}"])
    run, checkpoint = launch.prepare_run_dir(cfg, "ddp-lora.yaml", resume=False, console=Console(quiet=True))
    assert checkpoint is None and run.path == tmp_path / "ddp-lora"
    run.update_manifest(status="completed")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- shipped FSDP / DeepSpeed configs

def _strategy_examples():
    return sorted(p for p in EXAMPLES.glob("*.yaml") if "distributed_config" in p.read_text())


def test_every_distributed_example_starts_with_its_command_and_validates(monkeypatch):
    monkeypatch.chdir(ROOT)  # distributed_config paths are relative to the repository root
    examples = sorted(EXAMPLES.glob("*.yaml"))
    assert {p.name for p in examples} >= {"ddp-lora.yaml", "fsdp-full.yaml", "zero2-lora.yaml", "zero3-full.yaml"}
    for path in examples:
        first = path.read_text().splitlines()[0]
        assert first.startswith(f"# tuneforge train examples/distributed/{path.name} --nproc "), path.name
        cfg = load_config(path)
        if cfg.training.distributed_config:
            assert Path(cfg.training.distributed_config).is_file(), path.name


def test_strategy_examples_map_to_trainer_arguments_and_torchrun(monkeypatch):
    monkeypatch.chdir(ROOT)
    seen = {}
    for path in _strategy_examples():
        cfg = load_config(path)
        args = launch.scale_out_arguments(cfg.training, world_size=8)
        nproc = int(path.read_text().split("--nproc ")[1].split()[0])
        command = torchrun_command(f"examples/distributed/{path.name}", [], LaunchPlan(nproc=nproc), run_name="x")
        assert command[3:6] == ["--nproc_per_node", str(nproc), "--standalone"]
        seen[cfg.training.distributed] = seen.get(cfg.training.distributed, []) + [json.loads(
            Path(cfg.training.distributed_config).read_text())]
        if cfg.training.distributed == "fsdp":
            assert args["fsdp"] is True and args["fsdp_config"] == "examples/distributed/fsdp.json"
            assert "deepspeed" not in args
        else:
            assert args["deepspeed"] == cfg.training.distributed_config and "fsdp" not in args
    assert sorted(c["zero_optimization"]["stage"] for c in seen["deepspeed"]) == [2, 3]
    assert len(seen["fsdp"]) == 1


def _hf_filled_deepspeed_keys() -> set[str]:
    """The DeepSpeed keys transformers' Trainer fills when their value is "auto" (read from its source)."""
    import transformers.integrations.deepspeed as hf_ds

    source = Path(hf_ds.__file__).read_text()
    return set(re.findall(r'fill_(?:match|only)\(\s*"([a-z0-9_.]+)"', source))


DEEPSPEED_TOP_KEYS = {"bf16", "fp16", "zero_optimization", "gradient_accumulation_steps", "gradient_clipping",
                      "train_batch_size", "train_micro_batch_size_per_gpu", "steps_per_print",
                      "wall_clock_breakdown", "optimizer", "scheduler"}
ZERO_KEYS = {"stage", "overlap_comm", "contiguous_gradients", "allgather_partitions", "allgather_bucket_size",
             "reduce_scatter", "reduce_bucket_size", "sub_group_size", "offload_optimizer", "offload_param"}
ZERO3_ONLY_KEYS = {"stage3_prefetch_bucket_size", "stage3_param_persistence_threshold",
                   "stage3_max_live_parameters", "stage3_max_reuse_distance",
                   "stage3_gather_16bit_weights_on_model_save"}


def _auto_keys(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _auto_keys(value, f"{prefix}{key}.")
        elif value == "auto":
            yield f"{prefix}{key}"


@pytest.mark.parametrize("name,stage", [("zero2.json", 2), ("zero3.json", 3)])
def test_deepspeed_configs_are_well_formed(name, stage):
    config = json.loads((EXAMPLES / name).read_text())
    assert set(config) <= DEEPSPEED_TOP_KEYS, set(config) - DEEPSPEED_TOP_KEYS
    zero = config["zero_optimization"]
    assert zero["stage"] == stage
    allowed = ZERO_KEYS | (ZERO3_ONLY_KEYS if stage == 3 else set())
    assert set(zero) <= allowed, set(zero) - allowed
    if stage == 3:
        # Without gathering on save, ZeRO-3 writes sharded weights and the run's merged export would be empty.
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    # "auto" only where the Trainer fills it in from the run's own settings (batch, accumulation, clipping, dtype),
    # so the DeepSpeed view and tuneforge's config can never disagree.
    filled = _hf_filled_deepspeed_keys()
    assert {"train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "bf16.enabled"} <= filled
    stage3_filled = {"zero_optimization.reduce_bucket_size", "zero_optimization.stage3_prefetch_bucket_size",
                     "zero_optimization.stage3_param_persistence_threshold"}  # filled from the model's hidden size
    autos = set(_auto_keys(config))
    assert autos and autos <= filled | stage3_filled, autos - filled - stage3_filled
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size",
                "gradient_clipping"):
        assert config[key] == "auto", key


def test_fsdp_config_uses_known_keys():
    import transformers.training_args as hf_args

    config = json.loads((EXAMPLES / "fsdp.json").read_text())
    source = Path(hf_args.__file__).read_text()
    for key in config:  # every key must be one transformers reads from fsdp_config
        assert re.search(rf'fsdp_config(?:\.get\(|\[)"{key}"', source), key
    assert config["version"] == 2 and config["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"


def test_deepspeed_without_its_config_or_package_is_a_clear_error(monkeypatch, tmp_path):
    from pydantic import ValidationError

    from tuneforge.config.schema import TrainingConfig

    with pytest.raises(ValidationError, match="needs training.distributed_config"):
        TrainingConfig(distributed="deepspeed")
    with pytest.raises(ValidationError, match="only read with"):
        TrainingConfig(distributed_config="x.json")
    (tmp_path / "z.json").write_text("{}")
    monkeypatch.setattr(launch, "_package_available", lambda name: name != "deepspeed")
    with pytest.raises(ConfigError, match="needs the deepspeed package"):
        launch.preflight(TrainingConfig(distributed="deepspeed", distributed_config=str(tmp_path / "z.json")))
    monkeypatch.setattr(launch, "_package_available", lambda name: True)
    with pytest.raises(ConfigError, match="does not exist"):
        launch.preflight(TrainingConfig(distributed="fsdp", distributed_config=str(tmp_path / "missing.json")))
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        launch.preflight(TrainingConfig(distributed="fsdp", distributed_config=str(tmp_path / "bad.json")))


def test_fsdp_example_checkpoints_activations_with_fsdp_itself(monkeypatch, tmp_path):
    """Under FSDP the Trainer's gradient checkpointing re-gathers sharded weights in the backward pass; FSDP's own
    activation checkpointing (fsdp_config) does not."""
    from transformers import TrainingArguments

    monkeypatch.chdir(ROOT)
    cfg = load_config(EXAMPLES / "fsdp-full.yaml")
    assert cfg.training.distributed == "fsdp" and cfg.training.gradient_checkpointing is False
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[],
                             **launch.scale_out_arguments(cfg.training, world_size=8))
    assert args.fsdp_plugin_args["activation_checkpointing"] is True  # what accelerate's FSDP plugin receives
    assert not args.activation_checkpointing
