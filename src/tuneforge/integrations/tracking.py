"""Experiment trackers the trainer reports to (`training.report_to`): the names tuneforge accepts, whether each is
usable here, and the TrainingArguments that turn them on. transformers owns the integrations themselves
(transformers.integrations.INTEGRATION_TO_CALLBACK); this module only checks availability before a run starts,
the same way transformers does, without importing transformers (config validation stays fast).

Where the reports go is each tracker's own setting:
  mlflow       MLFLOW_TRACKING_URI (default ./mlruns), MLFLOW_EXPERIMENT_NAME
  tensorboard  TENSORBOARD_LOGGING_DIR, else <run>/checkpoints/runs/<date>
  wandb        WANDB_PROJECT, WANDB_MODE=offline for local runs
"""
from __future__ import annotations

import importlib.util
import os

TRACKERS = ("mlflow", "tensorboard", "wandb")
PACKAGES = {"mlflow": ("mlflow",), "tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}
INSTALL = {"mlflow": "mlflow-skinny (or mlflow)", "tensorboard": "tensorboard", "wandb": "wandb"}


def is_available(tracker: str) -> bool:
    """Mirrors transformers' is_mlflow_available / is_tensorboard_available / is_wandb_available."""
    if tracker == "mlflow" and os.getenv("DISABLE_MLFLOW_INTEGRATION", "FALSE").upper() == "TRUE":
        return False
    return any(importlib.util.find_spec(name) is not None for name in PACKAGES[tracker])


def check_trackers(names: list[str]) -> list[str]:
    """The list unchanged when every tracker is usable; a ValueError naming the missing package otherwise."""
    if len(set(names)) != len(names):
        raise ValueError(f"{names}: a tracker is listed twice")
    missing = [n for n in names if not is_available(n)]
    if missing:
        raise ValueError("; ".join(f"{n} is not installed (pip install {INSTALL[n]})"
                                   + (" or DISABLE_MLFLOW_INTEGRATION is set" if n == "mlflow" else "")
                                   for n in missing))
    return names


def trainer_reporting(names: list[str], run_name: str | None) -> dict:
    """TrainingArguments keywords: report_to, and the run's name so tracker runs are named after the tuneforge run."""
    return {"report_to": list(names), **({"run_name": run_name} if names and run_name else {})}
