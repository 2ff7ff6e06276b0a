"""Counterfactual swaps (whole word, case kept, both ways in one pass, recorded) and class balance by cohort."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tuneforge.cli.main import app
from tuneforge.data.fairness.cohorts import cohort_balance
from tuneforge.data.fairness.swaps import counterfactual_row, load_swaps, swap_text
from tuneforge.data.formats import load_dataset_file
from tuneforge.errors import ConfigError


def _chat(q, a, **meta):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], **meta}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_default_list_swaps_both_ways_in_one_pass_keeping_case_and_word_boundaries():
    swaps = load_swaps()
    applied: dict = {}
    text = "He told his sister; SHE thanked him. The shepherd's heir, Emily, met Greg."
    assert swap_text(text, swaps, applied) == \
        "She told her brother; HE thanked her. The shepherd's heir, Lakisha, met Jamal."
    assert applied == {("gender", "he", "she"): 1, ("gender", "his", "her"): 1, ("gender", "sister", "brother"): 1,
                       ("gender", "she", "he"): 1, ("gender", "him", "her"): 1, ("names", "emily", "lakisha"): 1,
                       ("names", "greg", "jamal"): 1}


def test_copy_records_its_source_and_swaps_and_leaves_roles_and_meta_alone():
    row = _chat("Is she a doctor?", "Yes, she is.", meta={"gender": "she"})
    copy, applied = counterfactual_row(row, load_swaps(), "train.jsonl:4")
    assert copy["messages"] == [{"role": "user", "content": "Is he a doctor?"},
                                {"role": "assistant", "content": "Yes, he is."}]
    assert copy["meta"]["gender"] == "she" and row["messages"][0]["content"] == "Is she a doctor?"
    assert applied == [{"group": "gender", "from": "she", "to": "he", "count": 2}]
    assert copy["meta"]["counterfactual"] == {"source": "train.jsonl:4", "swaps": applied}


def test_swap_list_problems_name_the_file_and_group(tmp_path):
    bad = tmp_path / "swaps.yaml"
    bad.write_text("groups:\n  g:\n    cohorts: [a, b]\n    pairs: [[x, y], [y, z]]\n")
    with pytest.raises(ConfigError, match=r"swaps.yaml: groups.g: 'y' is listed twice"):
        load_swaps(str(bad))
    bad.write_text("groups:\n  g:\n    cohorts: [a, b]\n    pairs: [[x, y]]\n    one_way: {w: q}\n")
    with pytest.raises(ConfigError, match=r"groups.g.one_way.w: the replacement must be a word"):
        load_swaps(str(bad))


def test_cohort_balance_from_terms_and_from_a_field(tmp_path):
    rows = [_chat("He is late.", "no", label="neg", region="north"),
            _chat("He is early.", "yes", label="pos", region="north"),
            _chat("He is here.", "yes", label="pos", region="south"),
            _chat("She is late.", "no", label="neg", region="south"),
            _chat("She and he wait.", "no", label="neg", region="south"),
            _chat("It rains.", "no", label="neg", region="north")]
    loaded = load_dataset_file(_write(tmp_path / "t.jsonl", rows))
    by_terms = cohort_balance(loaded, "meta.label")["groups"]["gender"]
    assert by_terms["cohorts"]["male"] == {"rows": 3, "labels": {"pos": 2, "neg": 1},
                                           "shares": {"pos": 0.6667, "neg": 0.3333}}
    assert by_terms["cohorts"]["female"]["labels"] == {"neg": 1}
    assert by_terms["cohorts"]["both"]["rows"] == 1 and by_terms["cohorts"]["none"]["rows"] == 1
    # pos: 2/3 among male, 0 among female -> gap 0.6667; neg: 1/3 vs 1 -> 0.6667
    assert by_terms["label_share_gap"] == {"neg": 0.6667, "pos": 0.6667}
    by_field = cohort_balance(loaded, "meta.label", cohort_field="region")
    assert by_field["source"] == "field meta.region"
    north = by_field["groups"]["meta.region"]["cohorts"]["north"]
    assert north["labels"] == {"neg": 2, "pos": 1}


def test_counterfactual_cli_writes_copies_and_reports_untouched_rows(tmp_path):
    data = _write(tmp_path / "train.jsonl", [_chat("Did his wife call?", "Yes, Mrs Lee did."),
                                             _chat("What is 2+2?", "4")])
    out = tmp_path / "cf.jsonl"
    result = CliRunner().invoke(app, ["data", "counterfactual", data, "--out", str(out), "--include-original"])
    assert result.exit_code == 0, result.output
    assert "2 rows: 1 with swapped terms, 1 without (lines 2; not written" in result.output
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(written) == 3  # two originals + one copy
    assert written[1]["messages"][0]["content"] == "Did her husband call?"
    assert written[1]["meta"]["counterfactual"]["source"] == f"{data}:1"


def test_audit_has_a_cohort_section(tmp_path):
    from tuneforge.data.audit import AuditInputs, run_audit
    from tuneforge.data.audit_report import render_html

    rows = [_chat("He is late.", "no", label="neg"), _chat("She is early.", "yes", label="pos")]
    report = run_audit(AuditInputs(train=_write(tmp_path / "t.jsonl", rows)))
    gender = report["cohort_balance"]["groups"]["gender"]
    assert gender["label_share_gap"] == {"neg": 1.0, "pos": 1.0}
    assert "Class balance by cohort" in render_html(report)
