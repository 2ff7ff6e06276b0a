from pathlib import Path

import pytest

from tuneforge.config.loader import apply_overrides, dump_config, load_config, parse_override
from tuneforge.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_minimal_config_fills_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "data:\n  train: a.jsonl\n"))
    assert cfg.method.name == "lora" and cfg.method.lora.r == 16 and cfg.method.lora.alpha == 32
    assert cfg.method.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert cfg.effective_learning_rate() == 2e-4
    cfg.method.name = "full"
    assert cfg.effective_learning_rate() == 1e-5


def test_unknown_key_names_key_and_line(tmp_path):
    path = write(tmp_path, "data:\n  train: a.jsonl\ntraining:\n  batch_size: 4\n  learing_rate: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}:5: training.learing_rate: unknown key" in str(err.value)


def test_wrong_type_names_key_and_line(tmp_path):
    path = write(tmp_path, "data:\n  train: a.jsonl\ntraining:\n  batch_size: many\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}:4: training.batch_size:" in str(err.value)
    assert "integer" in str(err.value)


def test_missing_required_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="data: required key is missing"):
        load_config(write(tmp_path, "training:\n  batch_size: 4\n"))
    with pytest.raises(ConfigError, match=r"run.yaml:3: invalid YAML"):
        load_config(write(tmp_path, "data:\n  train: [a\n"))


def test_dotted_overrides(tmp_path):
    path = write(tmp_path, "data:\n  train: a.jsonl\n")
    cfg = load_config(path, ["training.max_steps=7", "method.name=full", "method.lora.target_modules=[q_proj]"])
    assert cfg.training.max_steps == 7 and cfg.method.name == "full"
    assert cfg.method.lora.target_modules == ["q_proj"]
    with pytest.raises(ConfigError, match=r"<command line> 'training.max_stepz=3': training.max_stepz: unknown key"):
        load_config(path, ["training.max_stepz=3"])
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        parse_override("training.max_steps")
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"data": {"train": "x"}}, ["data.train.deep=1"])


def test_cross_field_check(tmp_path):
    with pytest.raises(ConfigError, match="early_stopping_patience needs data.validation"):
        load_config(write(tmp_path, "data:\n  train: a.jsonl\ntraining:\n  early_stopping_patience: 2\n"))


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, "data:\n  train: a.jsonl\n"), ["training.seed=3"])
    again = load_config(write(tmp_path, dump_config(cfg)))
    assert again == cfg


def example_configs():
    paths = sorted((REPO / "examples").glob("*.yaml")) + [REPO / "src/tuneforge/assets/quickstart/quickstart.yaml"]
    return [p for p in paths]


@pytest.mark.parametrize("path", example_configs(), ids=lambda p: p.name)
def test_every_example_config_validates_and_starts_with_its_command(path, monkeypatch):
    from tuneforge.config.loader import check_config_file

    first = path.read_text().splitlines()[0]
    assert first.startswith("# tuneforge "), f"{path} must start with the command that runs it"
    monkeypatch.chdir(REPO)  # examples are run from the repository root (their distributed_config paths too)
    check_config_file(path)


def test_validate_names_a_missing_or_broken_distributed_config(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tuneforge.cli.main import app

    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "fsdp.json").write_text('{"version": 2}')
    config = folder / "run.yaml"
    config.write_text("data:\n  train: a.jsonl\ntraining:\n  distributed: fsdp\n  distributed_config: fsdp.json\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["config", "validate", str(config)])
    assert result.exit_code == 2, result.output
    assert f"{config}:5: training.distributed_config: fsdp.json does not exist" in result.output
    assert str(tmp_path / "fsdp.json") in result.output  # where it was looked for
    assert f"{folder / 'fsdp.json'} exists" in result.output  # and where it is

    (tmp_path / "broken.json").write_text("{nope")
    result = CliRunner().invoke(app, ["config", "validate", str(config), "training.distributed_config=broken.json"])
    assert result.exit_code == 2
    assert "'training.distributed_config=broken.json': training.distributed_config: broken.json is not valid JSON" \
        in result.output
    monkeypatch.chdir(folder)
    assert CliRunner().invoke(app, ["config", "validate", str(config)]).exit_code == 0


def test_cli_messages_keep_long_paths_whole(tmp_path):
    """Output that is not a terminal is 80 columns wide; a path in a message must not be split across lines."""
    from typer.testing import CliRunner

    from tuneforge.cli.main import app

    deep = tmp_path / ("a-directory-name-long-enough-to-cross-the-eighty-column-boundary-" * 2) / "run.yaml"
    deep.parent.mkdir(parents=True)
    deep.write_text("data:\n  train: a.jsonl\ntraining:\n  learing_rate: 0.1\n")
    result = CliRunner().invoke(app, ["config", "validate", str(deep)])
    assert result.exit_code == 2
    assert f"{deep}:4: training.learing_rate: unknown key" in result.output
    # A plain message (not an error) goes through the same console.
    result = CliRunner().invoke(app, ["runs", "ls", "--runs-dir", str(deep.parent)])
    assert result.exit_code == 0 and f"no runs under {deep.parent}" in result.output


def test_batch_size_says_it_counts_packed_rows_when_packing():
    from tuneforge.config.schema import TrainingConfig

    assert "packed rows, not examples" in TrainingConfig.model_fields["batch_size"].description
    assert "batch_size then counts packed rows" in TrainingConfig.model_fields["batching"].description


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("method,objective,frozen_bf16", [
    ("lora", "sft", True), ("lora", "dpo", True), ("lora", "reward", False), ("full", "sft", False),
    ("freeze", "sft", False), ("qlora", "sft", False), ("ia3", "sft", False)])
def test_auto_precision_resolves_by_the_device_and_what_the_run_trains(tmp_path, monkeypatch, native, method,
                                                                       objective, frozen_bf16):
    from tuneforge.integrations import bf16

    monkeypatch.setattr(bf16, "native_bf16", lambda: (native, "stub"))
    freeze = "\n  freeze:\n    train_last_n_blocks: 1" if method == "freeze" else ""
    text = (f"data:\n  train: a.jsonl\nmethod:\n  name: {method}{freeze}\nobjective:\n  name: {objective}\n"
            "training:\n  frozen_base_dtype: auto\n  mixed_precision: auto\n")
    cfg = load_config(write(tmp_path, text))
    # Only a base nothing trains is held in bf16; autocast keeps float32 master weights, so it follows the device.
    assert cfg.training.frozen_base_dtype == ("bfloat16" if native and frozen_bf16 else "model")
    assert cfg.model.dtype == "float32"  # evaluation and exports stay in model.dtype
    assert cfg.training.mixed_precision == ("bf16" if native else "no")
    # Saved resolved: the run directory's config.yaml reads the same on any machine.
    saved = load_config(write(tmp_path, dump_config(cfg)))
    assert saved.training == cfg.training
    assert "frozen_base_dtype: auto" not in dump_config(cfg) and "mixed_precision: auto" not in dump_config(cfg)
    # Explicit values are never touched; bfloat16 where something trains the base is an error naming the field.
    explicit = load_config(write(tmp_path, text), ["training.frozen_base_dtype=model", "training.mixed_precision=no"])
    assert (explicit.training.frozen_base_dtype, explicit.training.mixed_precision) == ("model", "no")
    if not frozen_bf16:
        with pytest.raises(ConfigError, match="frozen_base_dtype bfloat16 with method"):
            load_config(write(tmp_path, text), ["training.frozen_base_dtype=bfloat16"])


def test_native_bf16_names_the_reason():
    from tuneforge.integrations.bf16 import native_bf16

    native, reason = native_bf16()
    assert isinstance(native, bool)
    assert ("AVX512-BF16" in reason or "AMX" in reason or "computes bf16" in reason) == native


def test_mixed_precision_no_survives_yaml_booleans(tmp_path):
    """PyYAML reads a bare `no` as false; `mixed_precision: no` is still the string the schema means."""
    assert load_config(write(tmp_path, "data:\n  train: a.jsonl\ntraining:\n  mixed_precision: no\n")
                       ).training.mixed_precision == "no"
    cfg = load_config(write(tmp_path, "data:\n  train: a.jsonl\n"), ["training.mixed_precision=no"])
    assert cfg.training.mixed_precision == "no"


def test_native_bf16_says_no_where_torch_cannot_tell(monkeypatch):
    """Without CUDA and without torch.cpu's (private) instruction checks, `auto` takes the safe side: float32."""
    import types

    import torch

    from tuneforge.integrations import bf16

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch, "cpu", types.SimpleNamespace())  # a torch without _is_avx512_bf16_supported & co.
    bf16.native_bf16.cache_clear()
    try:
        native, reason = bf16.native_bf16()
        assert native is False and "neither AVX512-BF16 nor AMX" in reason
    finally:
        bf16.native_bf16.cache_clear()


def test_a_cross_field_error_points_at_the_line_of_the_key_it_names(tmp_path):
    """RunConfig-level checks carry no location; the key their message starts with gives the line (or override)."""
    text = "data:\n  train: a.jsonl\nmethod:\n  name: full\ntraining:\n  frozen_base_dtype: bfloat16\n"
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert f"{path}:6: training.frozen_base_dtype: " in str(error.value)
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, "data:\n  train: a.jsonl\nmethod:\n  name: full\n"),
                    ["training.frozen_base_dtype=bfloat16"])
    assert "'training.frozen_base_dtype=bfloat16': training.frozen_base_dtype: " in str(error.value)
