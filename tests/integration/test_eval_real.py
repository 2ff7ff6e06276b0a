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
    # Measured on 2026-11-22: general_accuracy 0.55 (a random model answers none of the 60 questions).
    assert summary["general_accuracy"] >= 0.4, summary
    # The 135M model prefers the token "positive" for every review (accuracy 0.5, so the label task exposes a
    # prior bias), but its label probabilities still rank the reviews: P(positive) is higher on positive reviews
    # (mean ~0.81) than on negative ones (~0.69). Random weights give no such gap.
    items = [i for i in results["items"] if "probs" in (i.get("tuned") or {})]
    by_ref = {ref: [i["tuned"]["probs"]["positive"] for i in items if i["reference"] == ref]
              for ref in ("positive", "negative")}
    gap = sum(by_ref["positive"]) / len(by_ref["positive"]) - sum(by_ref["negative"]) / len(by_ref["negative"])
    assert gap >= 0.05, by_ref
    assert 0.0 <= summary["ece"] <= 1.0 and 0.0 <= summary["brier"] <= 2.0
