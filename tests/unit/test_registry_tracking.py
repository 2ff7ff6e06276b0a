"""`training.report_to`: each tracker tuneforge accepts is a transformers integration, availability is judged as
transformers judges it, a missing one is a config error at validate time, and the trainer receives the list."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneforge.cli.main import app
from tuneforge.integrations.tracking import TRACKERS, is_available

QUICKSTART = Path(__file__).resolve().parents[2] / "src/tuneforge/assets/quickstart"


def _config(tmp_path: Path, report_to: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(f"data: {{train: {QUICKSTART / 'train.jsonl'}}}\n"
                    "training:\n"
                    "  max_steps: 2\n"
                    f"  report_to: {report_to}\n")
    return path


def test_every_tracker_is_a_transformers_integration_with_the_same_availability():
    from transformers.integrations import integration_utils as hf

    for name in TRACKERS:
        assert name in hf.INTEGRATION_TO_CALLBACK
        assert is_available(name) == bool(getattr(hf, f"is_{name}_available")())


def test_unavailable_tracker_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DISABLE_MLFLOW_INTEGRATION", "TRUE")  # transformers then treats mlflow as absent
    result = CliRunner().invoke(app, ["config", "validate", str(_config(tmp_path, "[mlflow]"))])
    assert result.exit_code == 2
    assert "training.report_to" in result.output and "mlflow is not installed" in result.output
    assert "Traceback" not in result.output
    unknown = CliRunner().invoke(app, ["config", "validate", str(_config(tmp_path, "[comet]"))])
    assert unknown.exit_code == 2 and "training.report_to" in unknown.output


def test_trainer_receives_report_to(tmp_path):
    pytest.importorskip("mlflow")
    from transformers import TrainingArguments
    from transformers.integrations import MLflowCallback
    from transformers.integrations.integration_utils import (
        get_reporting_integration_callbacks,
    )

    from tuneforge.config.loader import load_config
    from tuneforge.objectives.base import trainer_arguments

    cfg = load_config(_config(tmp_path, "[mlflow]"))
    args = trainer_arguments(cfg, tmp_path / "runs" / "myrun" / "checkpoints", has_eval=False)
    assert args["report_to"] == ["mlflow"] and args["run_name"] == "myrun"
    assert get_reporting_integration_callbacks(TrainingArguments(**args).report_to) == [MLflowCallback]
    default = trainer_arguments(load_config(_config(tmp_path, "[]")), tmp_path / "c", has_eval=False)
    assert default["report_to"] == [] and "run_name" not in default
