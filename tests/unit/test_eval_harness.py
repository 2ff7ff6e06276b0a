"""`tuneforge eval --harness` on a local lm_eval task YAML with local data: offline, on the CPU."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneforge.cli.main import app

ROWS = [{"question": "2+2?", "choices": ["3", "4", "5"], "answer": 1},
        {"question": "Sky colour?", "choices": ["blue", "green"], "answer": 0},
        {"question": "Capital of France?", "choices": ["Rome", "Paris"], "answer": 1}]


def _task(folder: Path) -> Path:
    data = folder / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    yaml_path = folder / "tiny_mc.yaml"
    yaml_path.write_text(
        "task: tiny_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data}\ntest_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: answer\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    return yaml_path


def test_harness_runs_a_local_task_yaml_on_cpu(tmp_path, tiny_model_dir, monkeypatch):
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import torch

    task = _task(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", str(tiny_model_dir), "--harness", str(task), "--harness-limit", "3",
                                      "--batch-size", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "CUDA" not in result.output
    saved = json.loads((out / "harness.json").read_text())
    assert saved["tasks"] == ["tiny_mc"] and saved["task_files"] == [str(task)]
    assert saved["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    scores = saved["results"]["tiny_mc"]
    assert scores["sample_len"] == 3
    assert scores["acc,none"] in (0.0, 1 / 3, 2 / 3, 1.0)  # a share of three items
    assert "harness tiny_mc: acc" in result.output


def test_harness_bad_task_yaml_and_unknown_name_are_clear_errors(tmp_path):
    from tuneforge.eval.harness import HarnessUnavailable, resolve_tasks, run_harness

    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset_path: json\n")
    with pytest.raises(HarnessUnavailable, match="bad.yaml: task: missing"):
        resolve_tasks([str(bad)])
    with pytest.raises(HarnessUnavailable, match="no such task YAML"):
        resolve_tasks([str(tmp_path / "absent.yaml")])
    assert resolve_tasks([str(_task(tmp_path)), "arc_easy"]) == (["tiny_mc", "arc_easy"], [str(tmp_path)])
    pytest.importorskip("lm_eval")
    with pytest.raises(HarnessUnavailable, match="needs a local model folder or an --endpoint"):
        run_harness([str(_task(tmp_path))])
