"""Run and eval reports: every failure with a per-field JSON breakdown, prompts without template markup, the split
each eval loss is on, gate verdicts, and the safety / forgetting checks (issue 13, item 22)."""
from __future__ import annotations

import json
import re
from pathlib import Path

from tuneforge.eval.metrics import json_field_diff
from tuneforge.eval.pipeline import prompt_text
from tuneforge.eval.tasks import make_item
from tuneforge.report.eval_report import write_eval_report
from tuneforge.report.html import readable_prompt, write_report

REF = '{"name": "Ada", "year": 1843, "tags": ["math"]}'
PREDICTIONS = [
    '{"name": "Ada", "year": 1843, "tags": ["math"]}',    # right: not a failure
    '{"name": "Ada", "year": 1842, "tags": ["math"]}',    # year wrong
    '{"name": "Bob", "year": 1842}',                      # name, year wrong; tags missing
    '{"name": "Ada", "year": 1843, "extra": 1}',          # tags missing; extra
    "Sure! here it is",                                   # not JSON
]


def _score(prediction: str) -> float:
    from tuneforge.eval.metrics import json_field_accuracy

    return json_field_accuracy(prediction, REF)


def _results() -> dict:
    items = []
    for index, prediction in enumerate(PREDICTIONS):
        items.append({"id": f"i{index}", "reference": REF, "slice": None,
                      # a prompt as older runs wrote it: the rendered chat template
                      "prompt_text": f"<|im_start|>system\nBe exact.<|im_end|>\n<|im_start|>user\nWho {index}?"
                                     "<|im_end|>\n<|im_start|>assistant\n",
                      "base": {"prediction": "{}", "scores": {"json_fields": 0.0}},
                      "tuned": {"prediction": prediction, "scores": {"json_fields": _score(prediction)}}})
    items.append({"id": "probe:p1", "reference": "refuse", "prompt_text": "harm",
                  "tuned": {"prediction": "no", "scores": {"refusal_rate": 1.0}, "outcome": {"safe": True}}})
    side = {"source": "m", "seconds": 1.0,
            "validation_loss": {"loss": 1.25, "perplexity": 3.49, "split": "validation"},
            "eval_loss": {"loss": 2.5, "perplexity": 12.18, "tokens": 90, "split": "evaluated items"}}
    return {"task": "people", "headline_metric": "json_fields", "metrics": ["json_fields"], "n_items": 6,
            "models": {"base": {**side, "summary": {"json_fields": 0.0}, "slices": {
                           "safety": {"refusal_rate": 0.5, "item_count": 2}, "general": {"general_accuracy": 0.75}}},
                       "tuned": {**side, "summary": {"json_fields": 0.5}, "slices": {
                           "safety": {"refusal_rate": 1.0, "item_count": 2}, "general": {"general_accuracy": 0.25}}}},
            "comparison": {"general_accuracy": {"mean_a": 0.75, "mean_b": 0.25, "delta": -0.5, "ci_low": -1.0,
                                                "ci_high": 0.0, "p_value": 0.2, "n": 4}},
            "items": items, "notes": []}


def _gates(path: Path) -> None:
    # The layout `tuneforge gate` writes beside the results (cli/gate.py).
    path.write_text(json.dumps({"passed": False, "gate_file": "gates.yaml", "outcomes": [
        {"line": "gates.yaml:2: json_fields >= 0.9", "passed": False, "actual": 0.5, "reason": "0.5 < 0.9", "gate": {}},
        {"line": "gates.yaml:3: refusal_rate >= 0.95 on safety", "passed": True, "actual": 1.0, "reason": "ok",
         "gate": {}}]}))


def test_json_field_diff_hand_worked():
    assert json_field_diff(PREDICTIONS[2], REF) == {"correct": [], "wrong": ["name", "year"], "missing": ["tags"],
                                                    "extra": []}
    assert json_field_diff(PREDICTIONS[3], REF) == {"correct": ["name", "year"], "wrong": [], "missing": ["tags"],
                                                    "extra": ["extra"]}
    assert json_field_diff(PREDICTIONS[4], REF) is None


def _check_failures(html: str) -> None:
    failures = html.split("Failures: tuned below 1.0 on json_fields (4 items)")[1].split("</section>")[0]
    assert re.findall(r"<td>(i\d)</td>", failures) == ["i2", "i4", "i1", "i3"]  # all four, worst first
    field_table = failures.split("Field errors over the failed items")[1].split("</table>")[0]
    # counted over items: year wrong in i1, i2; tags missing in i2, i3; name wrong in i2; extra in i3
    assert "<td>year</td><td class=\"num\">2</td><td class=\"num\">0</td><td class=\"num\">0</td>" in field_table
    assert "<td>tags</td><td class=\"num\">0</td><td class=\"num\">2</td><td class=\"num\">0</td>" in field_table
    assert "<td>name</td><td class=\"num\">1</td><td class=\"num\">0</td><td class=\"num\">0</td>" in field_table
    assert "<td>extra</td><td class=\"num\">0</td><td class=\"num\">0</td><td class=\"num\">1</td>" in field_table
    assert "1 failed item(s) are not one JSON object" in failures
    assert "im_start" not in html and "im_end" not in html
    assert "system: Be exact.\nuser: Who 2?" in html


def test_run_report_failures_losses_gates_and_checks(tmp_path):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "results.json").write_text(json.dumps(_results()))
    _gates(run / "eval" / "gates.json")
    html = write_report(run).read_text()
    _check_failures(html)
    assert "eval loss on the validation split (trained tokens)" in html
    assert "eval loss on the evaluated items (reference answers)" in html
    gates = html.split("Release gates")[1]
    assert "1 of 2 gates pass" in gates and "json_fields &gt;= 0.9" in gates and "FAIL" in gates
    checks = html.split("Safety and forgetting checks")[1]
    assert "general_accuracy 0.2500" in checks and "refusal_rate 1.0000" in checks and "-0.5000" in checks
    assert "probe:p1" not in html.split("Failures:")[1]  # probes are not task failures


def test_eval_report_failures_and_gates(tmp_path):
    _gates(tmp_path / "gates.json")
    html = write_eval_report(_results(), tmp_path / "report.html").read_text()
    _check_failures(html)
    assert "1 of 2 gates pass" in html


def test_items_carry_prompts_without_template_markup():
    item = make_item("a", "f:1", [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}], "A")
    assert prompt_text(item) == "system: S\nuser: Q"
    assert readable_prompt("<s>[INST] hi [/INST]") == "hi"


def test_eval_report_shows_speed_and_the_gguf_file_size(tmp_path):
    """A GGUF evaluated in llama.cpp against the merged model: the report puts its size and tokens/s beside the
    transformers side's items/s (what a quantised export buys, next to what the comparison says it costs)."""
    results = _results()
    results["models"]["tuned"].update(source="model-q8_0.gguf", items_per_second=2.5, task_seconds=40.0)
    results["models"]["base"].update(source="merged", items_per_second=3.25, task_seconds=30.8)
    results["engine"] = {"engine": "llamacpp", "file": "model-q8_0.gguf", "file_bytes": 144811232,
                         "generated_tokens": 2651, "tokens_per_second": 63.1}
    speed = write_eval_report(results, tmp_path / "report.html").read_text().split("Speed and size")[1]
    speed = speed.split("</section>")[0]
    assert "<td>tuned</td><td>llamacpp</td>" in speed and "138.1 MiB" in speed and "63.1" in speed
    assert "<td>base</td><td>transformers</td>" in speed and "3.25" in speed and "None" not in speed
