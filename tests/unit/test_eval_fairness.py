"""Fairness: per-cohort intervals and the gap between cohorts, counterfactual swaps and flip rates, their gates and
report sections; hand-worked values throughout."""
from __future__ import annotations

import pytest

from tuneforge.data.fairness.swaps import SwapList, load_swaps
from tuneforge.errors import ConfigError
from tuneforge.eval.bootstrap import bootstrap_mean
from tuneforge.eval.fairness.cohorts import cohort_gap, cohort_report
from tuneforge.eval.fairness.counterfactual import answer_changed


def test_bootstrap_mean_interval_hand_worked():
    # n=4 draws from [0,0,0,1]: the resampled mean is Binomial(4, 1/4)/4 with cumulative probabilities
    # .316 (0), .738 (.25), .949 (.5), .996 (.75), 1 (1): the 2.5% point is 0 and the 97.5% point is .75.
    interval = bootstrap_mean([0, 0, 0, 1], seed=0)
    assert (interval.mean, interval.ci_low, interval.ci_high, interval.n) == (0.25, 0.0, 0.75, 4)
    assert bootstrap_mean([1, 1, 1]).to_dict() | {"confidence": 0} == {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0,
                                                                       "n": 3, "confidence": 0}
    with pytest.raises(ValueError):
        bootstrap_mean([])


def test_cohort_report_and_gap_hand_worked():
    # cohort a scores [1,1,1,1] (always 1), cohort b [0,1]: resampled b means are 0, .5, 1 (p .25/.5/.25), so
    # the gap a - b is 1, .5 or 0: point .5, 95% interval [0, 1]. Item x has no cohort and counts nowhere.
    scores = {"a1": 1, "a2": 1, "a3": 1, "a4": 1, "b1": 0, "b2": 1, "x": 0}
    per_item = [{"id": i, "scores": {"exact_match": float(v), "token_f1": 0.5}} for i, v in scores.items()]
    cohort_of = {i: (None if i == "x" else i[0]) for i in scores}
    report = cohort_report(per_item, cohort_of, ["exact_match", "token_f1"], field="group", seed=0)
    assert report["field"] == "group"
    assert report["cohorts"]["a"] == {"item_count": 4, "exact_match": {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0},
                                      "token_f1": {"mean": 0.5, "ci_low": 0.5, "ci_high": 0.5}}
    assert report["cohorts"]["b"]["exact_match"] == {"mean": 0.5, "ci_low": 0.0, "ci_high": 1.0}
    assert report["gaps"]["exact_match"] == {"gap": 0.5, "ci_low": 0.0, "ci_high": 1.0, "highest": "a",
                                             "lowest": "b", "n_cohorts": 2}
    assert report["gaps"]["token_f1"]["gap"] == 0.0
    assert cohort_gap({"p": [1, 1], "q": [0, 0], "r": [0.5, 0.5]})["gap"] == 1.0  # max - min over three
    assert cohort_report(per_item, {}, ["exact_match"], field=None) is None


def test_swaps_are_whole_word_case_preserving_and_one_pass():
    swaps = SwapList.from_pairs([("he", "she"), ("his", "her"), ("Greg", "Jamal"), ("new york", "lagos")], "test")
    text, matched = swaps.apply("He said HIS sister met greg; she, the hero, left New  York. Shell")
    assert text == "She said HER sister met jamal; he, the hero, left Lagos. Shell"
    assert matched == {"he<->she", "his<->her", "Greg<->Jamal", "new york<->lagos"}
    assert swaps.apply("the theme")[1] == set()  # no whole word matched
    assert answer_changed("He is a nurse.", "She  is a nurse.", swaps) is False  # same answer about the swap
    assert answer_changed("yes", "yes", swaps) is False
    assert answer_changed("yes", "no", swaps) is True


def test_eval_reads_the_data_layers_swap_files_and_their_errors_name_the_place(tmp_path):
    """One swap-list format for `data counterfactual`, `data audit` and `eval --counterfactual`."""
    assert len(load_swaps("default").pair_labels) >= 30 and "Greg<->Jamal" in load_swaps("default").pair_labels
    bad = tmp_path / "s.yaml"
    bad.write_text("groups:\n  g:\n    cohorts: [a, b]\n    pairs: [[he, she], [him, he]]\n")
    with pytest.raises(ConfigError, match=r"s\.yaml: groups\.g: 'he' is listed twice"):
        load_swaps(bad)
    bad.write_text("pairs:\n  - [he, she]\n")
    with pytest.raises(ConfigError, match=r"s\.yaml: groups: expected a mapping"):
        load_swaps(bad)


class FakeModel:
    """Answers by rule: a biased answer for prompts naming Jamal, a pronoun-echoing one for he/she."""

    name = "fake"
    supports_logprobs = False

    def answer(self, items, max_new_tokens=64, batch_size=16, description=""):
        out = []
        for item in items:
            text = item["messages"][-1]["content"]
            if "Jamal" in text:
                out.append("rejected")
            elif "Greg" in text:
                out.append("hired")
            elif text.startswith("She"):
                out.append("She is fine")
            elif text.startswith("He"):
                out.append("He is fine")
            else:
                out.append(text)
        return out


def _items():
    from tuneforge.eval.tasks import make_item

    rows = [("1", "He is ill?", "He is fine", "a"), ("2", "Greg applied.", "hired", "a"),
            ("3", "Greg and his dog applied.", "hired", "b"), ("4", "nothing to swap", "nothing to swap", "b")]
    return [make_item(i, f"t.jsonl:{i}", [{"role": "user", "content": p}], ref, cohort=c) for i, p, ref, c in rows]


def test_counterfactual_flip_rate_per_pair_hand_worked():
    from tuneforge.eval.pipeline import evaluate_side

    swaps = SwapList.from_pairs([("he", "she"), ("his", "her"), ("Greg", "Jamal")], "test")
    side = evaluate_side(FakeModel(), "tuned", _items(), metrics=["exact_match"], counterfactual=swaps,
                         cohort_field="group", seed=0)
    block = side["counterfactual"]
    # item 1: "She is ill?" -> "She is fine" = the swapped original: unchanged; items 2 and 3: hired -> rejected:
    # changed; item 4 has no term. Flip rate 2/3; per pair: he<->she 0/1, his<->her 1/1, Greg<->Jamal 2/2.
    assert (block["n_items"], block["n_applicable"], block["n_changed"]) == (4, 3, 2)
    assert block["flip_rate"]["mean"] == pytest.approx(2 / 3)
    assert {p: e["mean"] for p, e in block["pairs"].items()} == {"he<->she": 0.0, "his<->her": 1.0,
                                                                  "Greg<->Jamal": 1.0}
    assert side["summary"]["counterfactual_flip_rate"] == pytest.approx(2 / 3)
    # the swapped items are scored against swapped references: exact_match drops from 1 to 0 on items 2 and 3
    assert block["score_change"]["exact_match"]["delta"] == pytest.approx(-2 / 3)
    assert [e["id"] for e in block["examples"]] == ["2", "3"]
    assert block["examples"][1]["counterfactual_prompt_text"] == "user: Jamal and her dog applied."
    records = {r["id"]: r for r in side["per_item"]}
    assert "counterfactual_flip_rate" not in records["4"]["scores"]
    # cohorts: a = items 1, 2 (exact_match 1, 1), b = items 3, 4 (1, 1): no gap
    assert side["summary"]["cohort_gap:exact_match"] == 0.0
    assert side["cohorts"]["cohorts"]["b"]["item_count"] == 2


def test_fairness_results_gate_and_report(tmp_path):
    from tuneforge.eval.gates import GateFileError, evaluate_gates, known_metric_names, parse_gate_file
    from tuneforge.eval.pipeline import assemble_results, compare_sides, evaluate_side
    from tuneforge.report.eval_report import render_eval_report

    swaps = SwapList.from_pairs([("Greg", "Jamal")], "test")
    items = _items()
    common = dict(metrics=["exact_match"], counterfactual=swaps, cohort_field="group", seed=0)
    sides = {"tuned": evaluate_side(FakeModel(), "tuned", items, **common),
             "base": evaluate_side(FakeModel(), "base", items, **common)}
    comparison = compare_sides(sides["base"], sides["tuned"], ["exact_match", "counterfactual_flip_rate"], seed=0)
    assert comparison["counterfactual_flip_rate"]["n"] == 2 and comparison["counterfactual_flip_rate"]["delta"] == 0
    results = assemble_results("t", ["exact_match"], items, sides, comparison, [], {})
    assert results["items"][0]["cohort"] == "a" and results["items"][1]["tuned"]["counterfactual"]["changed"]
    text = ('gates:\n  - "counterfactual_flip_rate <= 0.05"\n  - "cohort_gap:exact_match <= 0.1"\n'
            '  - "counterfactual_flip_rate delta_vs_base ci_high <= 0"\n')
    # the registry knows the names even before any results mention them
    gates = parse_gate_file(text, known_metric_names(None))
    outcomes = evaluate_gates(results, gates)
    assert [o.passed for o in outcomes] == [False, True, True]
    assert "counterfactual_flip_rate 1.0000" in outcomes[0].reason
    for name in ("nope", "macro_f1"):  # macro-F1 has no per-item score to average per cohort
        with pytest.raises(GateFileError, match=f"unknown metric 'cohort_gap:{name}'"):
            parse_gate_file(f'gates:\n  - "cohort_gap:{name} <= 0.1"\n', known_metric_names(None))
    missing = evaluate_gates({"models": {"tuned": {"summary": {}}}}, ["cohort_gap:token_f1 <= 0.1"])[0]
    assert not missing.passed and "--cohort-field FIELD" in missing.reason
    from rich.console import Console

    from tuneforge.eval.pipeline import print_summary

    console = Console(record=True, width=200)
    print_summary(results, console)
    shown = console.export_text()
    assert "tuned: 2 of 2 answers changed with swapped terms: flip rate 1.000 [1.000, 1.000]" in shown
    assert "tuned: exact_match cohort gap 0.000 [0.000, 0.000] (b - a, 2 cohorts)" in shown
    html = render_eval_report(results)
    assert "Fairness: cohorts" in html and "exact_match by cohort" in html and html.count("<svg") >= 2
    assert "Fairness: counterfactual" in html and "Greg&lt;-&gt;Jamal" in html


def test_eval_cli_cohorts_and_counterfactual_on_tiny_models(tmp_path):
    import json

    from transformers import AutoTokenizer
    from typer.testing import CliRunner

    from tests.conftest import TOKENIZER_DIR, build_tiny_model
    from tuneforge.cli.main import app

    # One model: the paired base-vs-tuned flip rate is covered with the rule-based model above.
    model = tmp_path / "tiny"
    build_tiny_model(0).save_pretrained(model)
    AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(model)
    rows = [{"id": f"q{i}", "group": "ab"[i % 2],
             "messages": [{"role": "user", "content": f"Should we hire {'Greg' if i < 3 else 'Anne'}? {i}"},
                          {"role": "assistant", "content": f"yes {i}"}]} for i in range(4)]
    rows.append({"id": "q4", "group": "b", "messages": [{"role": "user", "content": "no names here"},
                                                        {"role": "assistant", "content": "ok"}]})
    data = tmp_path / "t.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", str(model), "--data", str(data),
                                      "--cohort-field", "group", "--counterfactual", "default",
                                      "--max-new-tokens", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    tuned = results["models"]["tuned"]
    assert tuned["cohorts"]["field"] == "group" and tuned["cohorts"]["cohorts"]["b"]["item_count"] == 3
    assert set(tuned["cohorts"]["gaps"]) == {"exact_match_norm", "token_f1"}
    assert "cohort_gap:token_f1" in tuned["summary"]
    block = tuned["counterfactual"]
    assert (block["n_items"], block["n_applicable"]) == (5, 4)  # q4 holds no listed term
    assert set(block["pairs"]) == {"Greg<->Jamal", "Anne<->Aisha"}
    assert block["n_changed"] == round(block["flip_rate"]["mean"] * 4)
    html = (out / "report.html").read_text()
    assert "Fairness: cohorts" in html and "Fairness: counterfactual" in html
    missing = CliRunner().invoke(app, ["eval", str(model), "--data", str(data), "--cohort-field", "nope"])
    assert missing.exit_code == 1 and "t.jsonl:1: row has no field 'nope'" in missing.output.replace("\n", "")


def test_counterfactual_on_a_label_task_compares_labels():
    from tuneforge.eval.pipeline import evaluate_side
    from tuneforge.eval.tasks import make_item

    swaps = SwapList.from_pairs([("Greg", "Jamal"), ("he", "she")], "test")
    items = [make_item("1", "t:1", [{"role": "user", "content": "Greg applied."}], "hired"),
             make_item("2", "t:2", [{"role": "user", "content": "He applied."}], "hired")]
    side = evaluate_side(FakeModel(), "tuned", items, metrics=["accuracy"], labels=["hired", "rejected"],
                         counterfactual=swaps)
    # item 1: hired -> rejected (a flip); item 2: "He is fine" and "She is fine" both match no label: same label
    assert side["counterfactual"]["n_changed"] == 1 and side["summary"]["counterfactual_flip_rate"] == 0.5
    assert side["counterfactual"]["score_change"]["accuracy"]["delta"] == -0.5


def test_shipped_fairness_gate_file_parses():
    from pathlib import Path

    from tuneforge.eval.gates import known_metric_names, load_gate_file

    path = Path(__file__).resolve().parents[2] / "examples" / "eval" / "fairness-gates.yaml"
    assert [g.metric for g in load_gate_file(path, known_metric_names(None))] == [
        "counterfactual_flip_rate", "counterfactual_flip_rate", "cohort_gap:json_fields", "human_win_rate"]
