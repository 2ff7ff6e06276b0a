"""Shared fixtures: a real tokenizer (SmolLM2's, shipped in tests/fixtures) and tiny random models."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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
