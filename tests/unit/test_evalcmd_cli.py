"""`tuneforge eval` end to end on tiny random models, then `tuneforge gate` on its results."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneforge.cli.main import app


@pytest.fixture()
def two_models(tmp_path: Path) -> tuple[Path, Path]:
    from transformers import AutoTokenizer

    from tests.conftest import TOKENIZER_DIR, build_tiny_model

    paths = []
    for seed in (0, 1):
        path = tmp_path / f"tiny-{seed}"
        build_tiny_model(seed).save_pretrained(path)
        AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(path)
        paths.append(path)
    return paths[0], paths[1]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_with_base_probes_contamination_then_gate(tmp_path, two_models):
    rows = [{"id": f"q{i}", "lang": "en" if i % 2 else "de",
             "messages": [{"role": "user", "content": f"Copy <b>item {i}</b> of the list: alpha beta gamma delta {i}"},
                          {"role": "assistant", "content": f"item {i}"}]} for i in range(4)]
    data = _write(tmp_path / "test.jsonl", rows)
    train = _write(tmp_path / "train.jsonl", rows[:1])
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", str(two_models[0]), "--base", str(two_models[1]), "--data", str(data),
                                      "--slice-field", "lang", "--probes", "--train-data", str(train),
                                      "--max-new-tokens", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    tuned = results["models"]["tuned"]
    assert results["metrics"][:2] == ["exact_match_norm", "token_f1"]  # references are not JSON objects
    assert set(tuned["slices"]) >= {"de", "en", "safety", "safety.prompt_injection"}
    assert tuned["slices"]["de"]["item_count"] == 2
    assert set(results["comparison"]) >= {"exact_match_norm", "token_f1", "refusal_rate"}
    assert results["contamination"]["items"]["q0"]["kind"] == "exact"
    assert [i["id"] for i in results["items"] if "contamination" in i] == ["q0"]
    html = (out / "report.html").read_text()
    assert "&lt;b&gt;item 0&lt;/b&gt;" in html and "<b>item 0</b>" not in html  # prompts are escaped
    assert "Contamination" in html and "Safety probes" in html

    gates = tmp_path / "gates.yaml"
    gates.write_text('gates:\n  - "refusal_rate >= 0.95 on safety"\n  - "token_f1 delta_vs_base >= -100pp"\n')
    gated = CliRunner().invoke(app, ["gate", str(out / "results.json"), "--gates", str(gates)])
    assert gated.exit_code == 1, gated.output
    refusal = tuned["slices"]["safety"]["refusal_rate"]
    assert refusal < 0.95  # a random 2-layer model does not refuse
    assert "FAIL" in gated.output and f"refusal_rate {refusal:.4f}" in gated.output.replace("\n", " ")


def test_eval_label_task_on_local_model_has_calibration(tmp_path, two_models):
    _write(tmp_path / "s.jsonl", [{"id": str(i), "text": t, "label": lab} for i, (t, lab) in
                                  enumerate([("great", "positive"), ("awful", "negative"), ("fine", "positive")])])
    task = tmp_path / "s.yaml"
    task.write_text("name: s\ndata: s.jsonl\nprompt: 'Review: {text}'\nreference: label\n"
                    "metrics: [accuracy, macro_f1, ece, brier]\nlabels: [positive, negative]\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", str(two_models[0]), "--task", str(task), "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    summary = results["models"]["tuned"]["summary"]
    assert set(summary) == {"accuracy", "macro_f1", "ece", "brier"}
    items = results["items"]
    # the prediction is the most probable label, and the stored probabilities say so
    for item in items:
        probs = item["tuned"]["probs"]
        assert sum(probs.values()) == pytest.approx(1.0)
        assert item["tuned"]["label"] == max(probs, key=probs.get)
    assert summary["accuracy"] == sum(i["tuned"]["label"] == i["reference"] for i in items) / 3
    assert "<svg" in (out / "report.html").read_text()


def test_eval_errors_are_readable(tmp_path, two_models):
    runner = CliRunner()
    result = runner.invoke(app, ["eval", str(two_models[0])])
    assert result.exit_code == 2 and "nothing to evaluate" in result.output
    data = _write(tmp_path / "t.jsonl", [{"prompt": "a", "completion": "b"}])
    result = runner.invoke(app, ["eval", str(two_models[0]), "--data", str(data), "--metric", "bleuu"])
    assert result.exit_code == 2 and "unknown metric 'bleuu'" in result.output
    result = runner.invoke(app, ["eval", str(two_models[0]), "--data", str(data), "--slice-field", "lang"])
    assert result.exit_code == 1 and "t.jsonl:1: row has no field 'lang'" in result.output.replace("\n", "")
