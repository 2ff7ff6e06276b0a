"""`tuneforge eval` on the real bundled SmolLM2-135M-Instruct: results that only real weights produce."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneforge.cli.main import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "eval"


@pytest.mark.slow
def test_real_model_sentiment_and_general_set(real_model_dir, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", str(real_model_dir), "--task", str(EXAMPLES / "sentiment.yaml"),
                                      "--general", "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    summary = results["models"]["tuned"]["summary"]
    # An instruction-tuned model separates these obvious reviews from label-token probabilities alone; a random
    # model sits near 0.5. It answers several of the 60 easy questions; a random model answers none.
    assert summary["accuracy"] >= 0.8, summary
    assert summary["general_accuracy"] >= 0.25, summary
    assert 0.0 <= summary["ece"] <= 1.0 and summary["brier"] < 0.5
