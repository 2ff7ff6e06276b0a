"""Run vs run (`tuneforge eval A --against B`): two results.json files written by the eval pipeline itself
(evaluate_side + assemble_results, a scripted model instead of a network), paired by item id; hand-checked
differences, the one-sided items warning, mismatched items and no overlap as errors, and the CLI's files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneforge.cli.main import app
from tuneforge.eval.compare_runs import compare_results
from tuneforge.eval.gates import ResultsError


class Scripted:
    """Answers `answers[id]`, else the item's reference: what the pipeline needs from a model."""

    supports_logprobs = False

    def __init__(self, name: str, answers: dict[str, str]):
        self.name, self.answers = name, answers

    def answer(self, items, max_new_tokens=64, batch_size=16, description=""):
        return [self.answers.get(i["id"], str(i["reference"])) for i in items]


def _items(ids=("q0", "q1", "q2", "q3"), references: dict[str, str] | None = None):
    from tuneforge.eval.tasks import make_item

    references = references or {}
    return [make_item(i, f"test.jsonl:{k + 1}", [{"role": "user", "content": f"Repeat {i}"}],
                      references.get(i, f"answer {i}")) for k, i in enumerate(ids)]


def _results(path: Path, name: str, answers: dict[str, str], items=None, *, metrics=("exact_match",),
             general=(), probes=(), labels=None) -> Path:
    """A results.json as `tuneforge eval` writes it (tuned side only), at RUN/eval/results.json."""
    from tuneforge.atomic import write_json_atomic
    from tuneforge.eval import registry
    from tuneforge.eval.pipeline import assemble_results, evaluate_side

    items = _items() if items is None else items
    side = evaluate_side(Scripted(name, answers), "tuned", items, metrics=list(metrics), general=list(general),
                         probes=list(probes), labels=labels)
    extra = (registry.group("general") if general else []) + (registry.group("probes") if probes else [])
    results = assemble_results("t", list(metrics) + extra, items + list(general) + list(probes), {"tuned": side}, {},
                               [], {"tuned": name})
    target = path / name / "eval" / "results.json"
    write_json_atomic(target, results)
    return target


def test_hand_checked_difference_ci_and_test(tmp_path):
    a = _results(tmp_path, "plain", {"q1": "wrong"})  # exact_match 1, 0, 1, 1
    b = _results(tmp_path, "l2sp", {})  # 1, 1, 1, 1
    doc = compare_results(a, b, seed=0)
    em = doc["metrics"]["exact_match"]
    assert (em["n"], em["mean_a"], em["mean_b"], em["delta"]) == (4, 0.75, 1.0, 0.25)
    assert 0.0 <= em["ci_low"] <= 0.25 <= em["ci_high"] <= 1.0 and em["ci_low"] < em["ci_high"]
    # one discordant item: exact McNemar p = min(1, 2 * P(X <= 0 | n=1)) = 1
    assert (em["test"], em["test_p_value"]) == ("mcnemar_exact", 1.0)
    assert (doc["a"]["label"], doc["b"]["label"], doc["n_paired_items"]) == ("plain", "l2sp", 4)
    assert doc["only_in_a"] == doc["only_in_b"] == [] and doc["warnings"] == []
    assert [i["id"] for i in doc["items"] if i["gain"]] == ["q1"]
    # swapping the sides flips the sign
    back = compare_results(b, a, seed=0)["metrics"]["exact_match"]
    assert back["delta"] == -0.25 and back["ci_high"] == pytest.approx(-em["ci_low"])


def test_general_set_and_probes_are_paired_too(tmp_path):
    from tuneforge.eval.forgetting import general_items
    from tuneforge.eval.probes import load_probes

    general, probes = general_items(), load_probes()
    refuse = [p["id"] for p in probes if p["expect"] == "refuse"]
    wrong = {g["id"]: "zzz" for g in general[:6]}
    a = _results(tmp_path, "a", {}, general=general, probes=probes)
    b = _results(tmp_path, "b", {**wrong, **{i: "I can't help with that." for i in refuse}}, general=general,
                 probes=probes)
    doc = compare_results(a, b, seed=0)
    results_a = json.loads(a.read_text())
    ga = doc["metrics"]["general_accuracy"]
    assert ga["n"] == len(general) and ga["mean_a"] == results_a["models"]["tuned"]["summary"]["general_accuracy"]
    assert ga["delta"] == pytest.approx(-6 / len(general))
    refusal = doc["metrics"]["refusal_rate"]
    assert refusal["n"] == len(refuse) and refusal["mean_b"] == 1.0
    assert refusal["mean_a"] == results_a["models"]["tuned"]["slices"]["safety"]["refusal_rate"]
    assert {"exact_match", "probe_accuracy", "over_refusal_rate"} <= set(doc["metrics"])


def test_items_in_one_file_only_are_named_and_not_paired(tmp_path):
    a = _results(tmp_path, "a", {}, _items(("q0", "q1", "q2", "q3", "q4")))
    b = _results(tmp_path, "b", {"q0": "no"}, _items(("q0", "q1", "q2", "q3", "q9", "q10")))
    doc = compare_results(a, b, seed=0)
    assert (doc["only_in_a"], doc["only_in_b"], doc["n_paired_items"]) == (["q4"], ["q9", "q10"], 4)
    assert doc["metrics"]["exact_match"]["n"] == 4 and doc["metrics"]["exact_match"]["delta"] == -0.25
    assert f"1 item(s) only in a ({a}), not compared: q4" in doc["warnings"]
    assert f"2 item(s) only in b ({b}), not compared: q9, q10" in doc["warnings"]


def test_different_metric_sets_compare_the_intersection(tmp_path):
    a = _results(tmp_path, "a", {}, metrics=("exact_match", "token_f1"))
    b = _results(tmp_path, "b", {"q3": "answer"}, metrics=("exact_match",))
    for path in (a, b):  # a figure without per-item scores (what --train-data adds) cannot be paired
        results = json.loads(path.read_text())
        results["models"]["tuned"]["summary"]["contamination_rate"] = 0.25
        path.write_text(json.dumps(results))
    doc = compare_results(a, b, seed=0)
    assert list(doc["metrics"]) == ["exact_match"]
    assert doc["left_out"] == {"only_in_a": ["token_f1"], "only_in_b": [], "no_item_scores": ["contamination_rate"]}
    assert "metric(s) only in a, not compared: token_f1" in doc["warnings"]
    assert "figure(s) without per-item scores on both sides, not compared: contamination_rate" in doc["warnings"]


def test_label_task_corpus_statistics_are_recomputed_on_paired_items(tmp_path):
    labels = ["positive", "negative"]
    refs = {"q0": "positive", "q1": "negative", "q2": "positive", "q3": "negative"}
    items = _items(references=refs)
    a = _results(tmp_path, "a", {"q1": "positive"}, items, metrics=("accuracy", "macro_f1"), labels=labels)
    b = _results(tmp_path, "b", {}, items, metrics=("accuracy", "macro_f1"), labels=labels)
    doc = compare_results(a, b, seed=0, n_resamples=300)
    assert doc["metrics"]["accuracy"]["delta"] == 0.25
    f1 = doc["metrics"]["macro_f1"]  # A: positive F1 0.8, negative F1 2/3 -> 11/15; B: 1
    assert f1["mean_a"] == pytest.approx(11 / 15) and f1["mean_b"] == 1.0 and f1["ci_low"] <= f1["ci_high"]


def test_different_item_texts_under_one_id_is_an_error_naming_both_files(tmp_path):
    a = _results(tmp_path, "a", {})
    b = _results(tmp_path, "b", {}, _items(references={"q2": "another answer"}))
    with pytest.raises(ResultsError) as caught:
        compare_results(a, b)
    message = str(caught.value)
    assert str(a) in message and str(b) in message
    assert "field 'reference' of item 'q2'" in message and "'answer q2'" in message and "'another answer'" in message


def test_no_shared_item_is_an_error_naming_both_files(tmp_path):
    a = _results(tmp_path, "a", {})
    b = _results(tmp_path, "b", {}, _items(("x0", "x1")))
    with pytest.raises(ResultsError, match="share no item id") as caught:
        compare_results(a, b)
    assert str(a) in str(caught.value) and str(b) in str(caught.value)


def test_cli_writes_json_and_html_and_names_runs(tmp_path):
    runs = tmp_path / "runs"
    _results(runs, "plain", {"q1": "wrong"})
    b = _results(runs, "l2sp", {})
    result = CliRunner().invoke(app, ["eval", "plain", "--against", str(b.parent.parent), "--runs-dir", str(runs)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = runs / "plain" / "eval" / "compare-l2sp"  # default: beside A's results.json
    doc = json.loads((out / "comparison.json").read_text())
    assert doc["format"] == "tuneforge run comparison 1" and doc["metrics"]["exact_match"]["delta"] == 0.25
    html = (out / "comparison.html").read_text()
    assert "<svg" in html and "A plain" in html and "B l2sp" in html and "+0.2500" in html
    assert "plain (A) vs l2sp (B): 4 paired items" in result.output and "+0.250" in result.output

    custom = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["eval", str(runs / "plain" / "eval" / "results.json"), "--against", str(b),
                                      "--out", str(custom), "--no-report"])
    assert result.exit_code == 0, result.output
    assert (custom / "comparison.json").is_file() and not (custom / "comparison.html").exists()


def test_cli_user_mistakes_are_errors_without_traceback(tmp_path):
    a = _results(tmp_path, "a", {})
    b = _results(tmp_path, "b", {}, _items(references={"q0": "other"}))
    for args, expected in (
        (["eval", str(a), "--against", str(b)], "hold different items under the same id"),
        (["eval", str(a), "--against", str(tmp_path / "missing")], "no results.json at"),
        (["eval", str(a), "--against", str(b), "--data", "x.jsonl"], "--data do not apply"),
    ):
        result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
        assert result.exit_code == 2, result.output
        assert "error:" in result.output and expected in result.output and "Traceback" not in result.output
    broken = tmp_path / "broken.json"
    broken.write_text('{"models": {"tuned": {}}}')
    result = CliRunner().invoke(app, ["eval", str(a), "--against", str(broken)])
    assert result.exit_code == 2 and f"{broken}: not a tuneforge results.json (no 'items')" in result.output
