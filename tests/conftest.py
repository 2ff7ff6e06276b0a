"""Shared fixtures: a real tokenizer (SmolLM2's, shipped in tests/fixtures) and tiny random models."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# MLflow 3 defaults its tracking store to ./mlflow.db in the working directory: a test that touches mlflow (the
# registry export, a run with report_to: [mlflow]) must never leave a database in the checkout.
os.environ.setdefault("MLFLOW_TRACKING_URI",
                      "sqlite:///" + os.path.join(tempfile.mkdtemp(prefix="tuneforge-mlflow-"), "mlflow.db"))
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # Under pytest-xdist every worker would start one torch/OpenMP thread per core: N workers x all cores threads on
    # the same cores is oversubscription (measured: 9 tok/s instead of 125 for two trainings at once). Each worker,
    # and every process it starts, gets its share of the cores instead. Set before torch is imported.
    _share = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, _share)

from tests.tiny_models import TOKENIZER_DIR, build_tiny_model  # noqa: F401  (re-exported for fixtures)


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    return TOKENIZER_DIR


@pytest.fixture()
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


@pytest.fixture()
def tiny_model():
    return build_tiny_model()


@pytest.fixture()
def tiny_model_dir(tmp_path: Path) -> Path:
    """A local HF folder (weights + tokenizer + chat template) of a tiny random model."""
    from transformers import AutoTokenizer

    path = tmp_path / "tiny-model"
    build_tiny_model().save_pretrained(path)
    AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(path)
    return path
