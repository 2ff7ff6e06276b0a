"""The planner: shapes from config + safetensors headers, hand-worked parameter and byte counts, activations against
saved-tensor bytes measured on a tiny model, the device table, the CLI's components, and train's refusal path."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.config.schema import RunConfig
from tuneforge.errors import ConfigError
from tuneforge.plan.devices import DEVICES, GB, Device, get_device
from tuneforge.plan.estimate import GIB, estimate, trainable_parameters
from tuneforge.plan.shape import lora_trainable, shape_from_config, shape_from_folder
from tuneforge.plan.workload import _batches, synthetic_workload

# tests/tiny_models.py: hidden 64, MLP 128, 2 blocks, 4 heads, 2 kv heads (kv dim 32), vocab 49152, tied.
# Per block: q 64x64 + k 64x32 + v 64x32 + o 64x64 + gate/up/down 3 x 64x128 + 2 norms of 64 = 36,992.
TINY_TOTAL = 2 * 36_992 + 49_152 * 64 + 64   # + embedding (tied with the head) + final norm = 3,219,776
TINY_EMBEDDING = 49_152 * 64


@pytest.fixture()
def tiny_folder(tmp_path: Path) -> Path:
    from tests.tiny_models import build_tiny_model

    build_tiny_model().save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"


def run_config(**sections) -> RunConfig:
    return RunConfig(data={"train": "x.jsonl", "max_length": 64}, **sections)


def test_shape_from_safetensors_headers_matches_the_model(tiny_folder):
    shape = shape_from_folder(tiny_folder)
    assert shape.total_params == TINY_TOTAL == 3_219_776
    assert shape.embedding_params == TINY_EMBEDDING and shape.head_params == TINY_EMBEDDING and shape.tied
    assert (shape.hidden, shape.layers, shape.intermediate, shape.kv_dim, shape.vocab) == (64, 2, 128, 32, 49152)
    assert shape.linears["k_proj"].shapes == [(64, 32), (64, 32)] and shape.linears["k_proj"].in_attention
    assert not shape.linears["down_proj"].in_attention and shape.linears["down_proj"].shapes[0] == (128, 64)
    assert shape.block_params == 2 * 36_992 + 64
    assert shape.file_dtype_bytes == 4 and shape.notes == []


def test_shape_without_weights_uses_the_formula_and_says_so(tiny_folder):
    config = json.loads((tiny_folder / "config.json").read_text())
    shape = shape_from_config(config)
    assert shape.total_params == TINY_TOTAL
    assert any("formula" in note for note in shape.notes)
    unknown = shape_from_config({"architectures": ["Mystery"], "n_embd": 32, "n_layer": 3, "vocab_size": 100})
    assert unknown.intermediate == 128 and any("4 x hidden" in note for note in unknown.notes)
    with pytest.raises(ConfigError, match="hidden size or layer count"):
        shape_from_config({"architectures": ["Nothing"]})


def test_lora_trainable_is_r_times_in_plus_out_and_matches_peft(tiny_folder):
    from peft import LoraConfig, get_peft_model

    from tests.tiny_models import build_tiny_model

    shape = shape_from_folder(tiny_folder)
    # r=8 on q,k,v,o per block: 8 x (64+64) + 2 x 8 x (64+32) + 8 x (64+64) = 3,584; two blocks.
    count, names = lora_trainable(shape, ["q_proj", "k_proj", "v_proj", "o_proj"], 8)
    assert count == 7_168 and names == ["q_proj", "k_proj", "v_proj", "o_proj"]
    model = get_peft_model(build_tiny_model(), LoraConfig(r=8, target_modules=["q_proj", "k_proj", "v_proj",
                                                                                "o_proj"]))
    assert count == sum(p.numel() for p in model.parameters() if p.requires_grad)
    all_linear, _ = lora_trainable(shape, "all-linear", 8)
    assert all_linear == 7_168 + 2 * 3 * 8 * (64 + 128)  # + gate, up, down
    assert lora_trainable(shape, "attention", 8)[0] == 7_168


def test_memory_components_by_hand(tiny_folder):
    shape = shape_from_folder(tiny_folder)
    device = Device("box", "gpu", 10 * GB, 1e12, 1e12, 1e11, "test", runtime_bytes=0.0)
    work = synthetic_workload(examples=8, length=32, trained=8, batch_size=4)
    full = estimate(run_config(method={"name": "full"}, training={"batch_size": 4}), shape, work, device)
    parts = {c.name: c.bytes for c in full.components}
    assert parts["weights"] == TINY_TOTAL * 4
    assert parts["gradients"] == TINY_TOTAL * 4
    assert parts["optimizer"] == 2 * TINY_TOTAL * 4           # AdamW: two fp32 states per parameter
    # full fine-tuning activations: (10h + 4i + 2kv + 70) fp32 per token per block x 4 rows x 32 tokens x 2 blocks
    assert parts["activations"] == (10 * 64 + 4 * 128 + 2 * 32 + 70) * 4 * 4 * 32 * 2
    bf16 = estimate(run_config(model={"dtype": "bfloat16"}, method={"name": "full"},
                               training={"batch_size": 4, "optimizer": "adamw_8bit"}), shape, work, device)
    parts16 = {c.name: c.bytes for c in bf16.components}
    assert parts16["weights"] == TINY_TOTAL * 2 and parts16["optimizer"] == 2 * TINY_TOTAL * 1
    lora = estimate(run_config(method={"name": "lora", "lora": {"r": 8}}, training={"batch_size": 4}), shape, work,
                    device)
    lparts = {c.name: c.bytes for c in lora.components}
    assert lora.trainable_params == 7_168 and lparts["optimizer"] == 2 * 7_168 * 4
    assert lparts["weights"] == TINY_TOTAL * 4 and "reference" not in lparts
    dpo_full = estimate(run_config(method={"name": "full"}, objective={"name": "dpo"}), shape,
                        synthetic_workload(8, 32, 8, 8, per_example=2), device)
    assert {c.name: c.bytes for c in dpo_full.components}["reference"] == TINY_TOTAL * 4
    # FLOPs: full fine-tuning is ~6 x params x tokens on the blocks; LoRA skips the frozen weight gradients.
    assert full.flops_per_step > lora.flops_per_step
    assert full.peak_bytes > lora.peak_bytes and full.fits


def test_activation_estimate_is_close_to_the_saved_tensor_bytes(tiny_folder):
    """The per-token activation formula against what autograd really saves on the tiny Llama (hooks count bytes)."""
    import torch

    from tests.tiny_models import build_tiny_model

    def saved_bytes(model, backbone, rows, seq):
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen = {}

        def pack(tensor):
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in params:
                seen[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            backbone(input_ids=torch.randint(0, 1000, (rows, seq))).last_hidden_state.sum()
        return sum(seen.values())

    shape = shape_from_folder(tiny_folder)
    device = Device("box", "cpu", 10 * GB, 1e12, 1e12, 1e11, "test", runtime_bytes=0.0)
    work = synthetic_workload(examples=4, length=48, trained=8, batch_size=4)
    model = build_tiny_model().train()
    planned = {c.name: c.bytes for c in estimate(run_config(method={"name": "full"}, training={"batch_size": 4}),
                                                   shape, work, device).components}["activations"]
    measured = saved_bytes(model, model.model, 4, 48)
    assert 0.8 < measured / planned < 1.2, (measured, planned)

    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(build_tiny_model(), LoraConfig(r=16, lora_dropout=0.05,
                                                                target_modules=["q_proj", "k_proj", "v_proj",
                                                                                "o_proj"]))
    peft_model.train()
    planned = {c.name: c.bytes for c in estimate(run_config(training={"batch_size": 4}), shape, work,
                                                   device).components}["activations"]
    measured = saved_bytes(peft_model, peft_model.get_base_model().model, 4, 48)
    assert 0.8 < measured / planned < 1.2, (measured, planned)


def test_trainable_counts_of_other_methods(tiny_folder):
    shape = shape_from_folder(tiny_folder)
    prompt = run_config(method={"name": "prompt", "prompt": {"num_virtual_tokens": 10}}).method
    assert trainable_parameters(prompt, shape)[0] == 10 * 64
    freeze = run_config(method={"name": "freeze", "freeze": {"train_last_n_blocks": 1}}).method
    assert trainable_parameters(freeze, shape)[0] == (2 * 36_992 + 64) // 2
    ia3 = run_config(method={"name": "ia3"}).method
    assert trainable_parameters(ia3, shape)[0] == 2 * (32 + 32 + 128)  # k, v outputs + down_proj inputs per block


def test_length_grouped_batches_pad_to_their_own_longest_row():
    lengths = [10, 100, 12, 98, 11, 99, 13, 97]
    batches = _batches(lengths, 1, 4, "length_grouped", 256, seed=0)
    assert sorted(b[1] for b in batches) == [13, 100]          # long rows together, short rows together
    assert sum(b[2] for b in batches) == sum(lengths)
    pairs = _batches([10, 20, 30, 40], 2, 1, "padded", 256, seed=0)  # DPO: chosen + rejected in one pass
    assert sorted((b[0], b[1]) for b in pairs) == [(2, 20), (2, 40)]
    packed = _batches([100] * 10, 1, 2, "packed", 256, seed=0)
    assert [b[1] for b in packed] == [256, 256] and sum(b[0] for b in packed) == 4


def test_device_table_lookup():
    assert get_device("A100-80GB") is DEVICES["a100-80gb"]
    assert DEVICES["a100-80gb"].memory_bytes == 80e9 and DEVICES["a100-80gb"].bf16_flops == 312e12
    assert DEVICES["h100"].bandwidth == 3350e9 and DEVICES["l4"].memory_bytes == 24e9
    assert DEVICES["rtx4090"].flops("bfloat16") == 165.2e12 and DEVICES["rtx4090"].flops("float32") == 82.6e12
    assert all(d.source for d in DEVICES.values())
    with pytest.raises(ConfigError, match="not a known device") as error:
        get_device("tpu-v9")
    assert "a100-80gb" in error.value.hint


def test_calibration_is_cached_per_fingerprint(tmp_path, monkeypatch):
    from tuneforge.plan import calibrate

    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path))
    calls = []

    def fake_benchmark(device="cpu", seconds=0.6):
        calls.append(device)
        return {"float32_flops": 5e10, "bfloat16_flops": 1e10, "bandwidth": 8e9}

    monkeypatch.setattr(calibrate, "benchmark", fake_benchmark)
    monkeypatch.setattr(calibrate, "_load_average", lambda: 0.0)
    first = calibrate.this_machine()
    second = calibrate.this_machine()
    assert len(calls) == 1 and first == second and first.calibrated
    assert first.fp32_flops == 5e10 and first.bandwidth == 8e9
    assert list((tmp_path / "plan").glob("calibration-*.json"))
    calibrate.this_machine(recalibrate=True)
    assert len(calls) == 2


def test_calibration_under_load_is_used_once_and_not_cached(tmp_path, monkeypatch):
    from rich.console import Console

    from tuneforge.plan import calibrate

    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(calibrate, "benchmark", lambda device="cpu", seconds=0.6: calls.append(device) or
                        {"float32_flops": 5e9, "bfloat16_flops": 1e9, "bandwidth": 8e8})
    monkeypatch.setattr(calibrate.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(calibrate, "_load_average", lambda: 1.5)
    console = Console(record=True, width=200)
    busy = calibrate.this_machine(console=console)
    assert busy.calibrated and "load average 1.5" in busy.source
    said = console.export_text()
    assert "busy" in said and "not cached" in said
    assert not list((tmp_path / "plan").glob("calibration-*.json"))
    calibrate.this_machine()
    assert len(calls) == 2  # measured again: a busy figure is never reused
    monkeypatch.setattr(calibrate, "_load_average", lambda: 0.2)
    calibrate.this_machine()
    calibrate.this_machine()
    assert len(calls) == 3 and list((tmp_path / "plan").glob("calibration-*.json"))


# ------------------------------------------------------------------------------------------------ CLI and train


def _config_file(tmp_path: Path, model_dir: Path) -> Path:
    data = tmp_path / "train.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"question {i} " * (i + 1)},
                          {"role": "assistant", "content": f"answer {i}"}]} for i in range(6)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {{source: {model_dir}}}\ndata: {{train: {data}, max_length: 64}}\n"
                      f"training: {{batch_size: 2, max_steps: 3}}\noutput: {{dir: {tmp_path / 'runs'}}}\n")
    return config


@pytest.fixture()
def small_machine(monkeypatch):
    """This machine as a 0.5 GiB box (the benchmark is not run): the runtime alone takes 0.8 GiB."""
    from tuneforge.plan import calibrate

    box = Device("this", "cpu", 0.5 * GIB, 5e10, 5e10, 8e9, "test box", runtime_bytes=0.8 * GIB)
    monkeypatch.setattr(calibrate, "this_machine", lambda **kwargs: box)
    return box


def test_plan_cli_names_the_components(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from tuneforge.cli.main import app

    config = _config_file(tmp_path, tiny_model_dir)
    result = CliRunner().invoke(app, ["plan", str(config), "--device", "l4", "--device", "h100"])
    assert result.exit_code == 0, result.output
    for word in ("runtime", "weights", "gradients", "optimizer", "activations", "logits", "peak", "seconds per step",
                 "tokens per step", "fits", "NVIDIA L4 datasheet", "h100"):
        assert word in result.output, word
    as_json = CliRunner().invoke(app, ["plan", str(config), "--device", "l4", "--json"])
    plan = json.loads(as_json.stdout)["l4"]
    assert plan["steps"] == 3 and plan["fits"] and plan["trainable_params"] > 0
    assert plan["peak_memory_gib"] > 0 and plan["seconds_per_step"] > 0 and plan["tokens_per_step"] > 0
    bad = CliRunner().invoke(app, ["plan", str(config), "--device", "tpu-v9"])
    assert bad.exit_code != 0 and "not a known device" in bad.output


def test_train_refuses_a_run_that_does_not_fit(tmp_path, tiny_model_dir, small_machine, monkeypatch):
    from typer.testing import CliRunner

    from tuneforge.cli.main import app

    config = _config_file(tmp_path, tiny_model_dir)
    result = CliRunner().invoke(app, ["train", str(config)])
    assert result.exit_code != 0
    assert "does not fit on this machine" in result.output and "GiB" in result.output
    assert "--no-plan-check" in result.output
    assert not (tmp_path / "runs").exists()  # refused before a run directory was made

    started = []
    monkeypatch.setattr("tuneforge.recipes.finetune.train_from_config",
                        lambda cfg, **kwargs: started.append(cfg))
    forced = CliRunner().invoke(app, ["train", str(config), "--no-plan-check"])
    assert forced.exit_code == 0, forced.output
    assert started and started[0].training.plan_check is False


def test_plan_check_false_runs_anyway(tmp_path, tiny_model_dir, small_machine):
    from tuneforge.config.loader import load_config
    from tuneforge.console import make_console
    from tuneforge.plan.build import check_before_training
    from tuneforge.recipes.finetune import base_model_ref

    config = _config_file(tmp_path, tiny_model_dir)
    cfg = load_config(config, [])
    base = base_model_ref(cfg.model.source, cfg.output.dir)
    with pytest.raises(ConfigError, match="does not fit"):
        check_before_training(cfg, make_console(quiet=True), base)
    plan = check_before_training(load_config(config, ["training.plan_check=false"]), make_console(quiet=True), base)
    assert plan is not None and not plan.fits and plan.peak_bytes > 0.5 * GIB


def test_a_plan_that_cannot_be_made_does_not_stop_training(monkeypatch):
    from tuneforge.console import make_console
    from tuneforge.plan import build

    def broken(*args, **kwargs):
        raise KeyError("train")

    monkeypatch.setattr(build, "make_plans", broken)
    console = make_console(quiet=True)
    assert build.check_before_training(run_config(), console, base_ref=None) is None


def test_step_time_is_the_sum_of_its_parts_and_sft_scores_only_trained_positions(tiny_folder):
    shape = shape_from_folder(tiny_folder)
    device = Device("box", "cpu", 10 * GB, 1e11, 1e11, 1e10, "test", runtime_bytes=0.0)
    work = synthetic_workload(examples=8, length=32, trained=8, batch_size=4)
    plan = estimate(run_config(training={"batch_size": 4}), shape, work, device)
    # The step's time is matmul + memory + overhead; one forward's time (kept for the evaluation passes) is not
    # added on top (it was: the quickstart's plan said 9.0 s/step for parts summing to 6.4 s).
    assert plan.seconds_per_step == pytest.approx(sum(plan.time_parts.values()))
    # SFT with the trained-positions loss runs the LM head on the 8 trained positions of each 32-token row only.
    plain = estimate(run_config(training={"batch_size": 4, "loss_at_trained_positions": False}), shape, work, device)
    head_unit = 2 * 64 * 49_152 * 4 * 31          # hidden x vocab x rows x scored positions, per pass
    assert plain.flops_per_step - plan.flops_per_step == pytest.approx(3 * head_unit * (1 - 8 / 32))


def test_partial_checkpointing_and_bf16_autocast_in_the_plan(tiny_folder):
    from tuneforge.plan.estimate import MIXED_ELEMENT_BYTES, activation_elements_per_token

    shape = shape_from_folder(tiny_folder)
    device = Device("box", "cpu", 10 * GB, 2e11, 1e11, 1e10, "test", runtime_bytes=0.0)
    work = synthetic_workload(examples=8, length=32, trained=8, batch_size=4)

    def plan(**training):
        return estimate(run_config(training={"batch_size": 4, **training}), shape, work, device)

    def part(result, name):
        return {c.name: c.bytes for c in result.components}.get(name)

    none, every = plan(), plan(gradient_checkpointing=True)
    half = plan(gradient_checkpointing=True, gradient_checkpointing_every_n_layers=2)
    per_token = activation_elements_per_token(shape, run_config().method)[0] * 4
    # 2 blocks, every 2nd recomputed: block 0 keeps only its input, block 1 keeps everything; block 0 is recomputed
    # after block 1's activations are freed, so one block's activations at most.
    assert part(half, "activations") == 4 * 32 * (64 * 4 + per_token)
    assert part(every, "activations") == 4 * 32 * (2 * 64 * 4 + per_token)
    assert max(part(every, "activations"), part(half, "activations")) < part(none, "activations")
    assert none.flops_per_step < half.flops_per_step < every.flops_per_step
    bf16 = plan(mixed_precision="bf16")
    assert part(bf16, "activations") == pytest.approx(part(none, "activations") * MIXED_ELEMENT_BYTES / 4)
    assert part(bf16, "autocast copies") == shape.block_params * 2 and part(none, "autocast copies") is None
    # The matmuls run at the bf16 rate (twice the fp32 rate on this device).
    assert bf16.time_parts["matmul"] == pytest.approx(none.time_parts["matmul"] / 2)
    # A device whose training steps reach less of the bf16 peak (a CPU): the bf16 matmul time grows by that share.
    from dataclasses import replace

    slower = estimate(run_config(training={"batch_size": 4, "mixed_precision": "bf16"}), shape, work,
                      replace(device, half_efficiency=0.5))
    assert slower.time_parts["matmul"] == pytest.approx(bf16.time_parts["matmul"] * 2)
    fp32 = estimate(run_config(training={"batch_size": 4}), shape, work, replace(device, half_efficiency=0.5))
    assert fp32.time_parts["matmul"] == pytest.approx(none.time_parts["matmul"])
    with pytest.raises(ValueError, match="only read with training.gradient_checkpointing"):
        run_config(training={"gradient_checkpointing_every_n_layers": 2})


def test_trained_positions_loss_holds_the_logits_of_trained_positions_only(tiny_folder):
    shape = shape_from_folder(tiny_folder)
    device = Device("box", "cpu", 10 * GB, 1e11, 1e11, 1e10, "test", runtime_bytes=0.0)
    work = synthetic_workload(examples=8, length=32, trained=8, batch_size=4)
    plan = estimate(run_config(training={"batch_size": 4}), shape, work, device)
    logits = {c.name: c.bytes for c in plan.components}["logits"]
    # 4 rows x 31 next-token positions, 8 of 32 tokens trained -> 31 scored (+1 for rounding), x 3 fp32 copies
    assert logits == 3 * (int(4 * 31 * 8 / 32) + 1) * 49_152 * 4


def test_qlora_on_a_cpu_counts_the_fp32_copies_bitsandbytes_leaves(tiny_folder):
    from tuneforge.plan.estimate import QLORA_CPU_COPIES

    shape = shape_from_folder(tiny_folder)
    work = synthetic_workload(examples=8, length=32, trained=8, batch_size=4)
    cpu = Device("box", "cpu", 10 * GB, 1e11, 1e11, 1e10, "test", runtime_bytes=0.0)
    gpu = Device("box", "gpu", 10 * GB, 1e11, 1e11, 1e10, "test", runtime_bytes=0.0)
    config = run_config(method={"name": "qlora"}, training={"batch_size": 4})
    linear = 2 * (64 * 64 + 64 * 32 + 64 * 32 + 64 * 64 + 3 * 64 * 128)  # the block linears of the tiny Llama
    on_cpu = {c.name: c.bytes for c in estimate(config, shape, work, cpu).components}
    assert on_cpu["dequantised copies"] == QLORA_CPU_COPIES * linear * 4
    assert "dequantised copies" not in {c.name for c in estimate(config, shape, work, gpu).components}
