"""Human evaluation: blinded sheets, raters' files read back and un-blinded, win/tie rates and agreement against
hand-worked values, the `human` block in results.json and its gate."""
from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from tuneforge.cli.main import app
from tuneforge.data.labeling.agreement import fleiss_kappa
from tuneforge.errors import ConfigError, DataError
from tuneforge.eval.human.results import read_choices, summarise


def test_fleiss_kappa_textbook_example():
    # Fleiss (1971) as on Wikipedia: 10 subjects, 14 raters, 5 categories: P = .378, Pe = .213, kappa = .210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=1e-5)
    with pytest.raises(ValueError):
        fleiss_kappa([[1, 1], [2, 1]])


def test_win_rate_ties_count_half_and_agreement_hand_worked():
    r1 = {"i1": "tuned", "i2": "tuned", "i3": "tie", "i4": "base"}
    r2 = {"i1": "tuned", "i2": "tie", "i3": "tie", "i4": "base"}
    human = summarise({"r1": r1, "r2": r2}, seed=0)
    # item scores (tuned 1, tie .5, base 0, mean over raters): 1, .75, .5, 0 -> .5625; tie shares 0, .5, 1, 0
    assert human["win_rate"]["mean"] == pytest.approx(0.5625)
    assert human["tie_rate"]["mean"] == pytest.approx(0.375)
    assert human["ties_count"] == "half"
    assert human["per_rater"]["r1"] == {"n": 4, "tuned": 2, "base": 1, "tie": 1, "win_rate": 0.625}
    agreement = human["agreement"]
    # Cohen: po 3/4, marginals r1 (2,1,1) r2 (1,1,2) over tuned/base/tie -> pe 5/16 -> kappa 7/11
    assert agreement["cohen_kappa"] == pytest.approx(7 / 11)
    # Fleiss: P_i 1, 0, 1, 1 -> P .75; shares 3/8, 2/8, 3/8 -> Pe 22/64 -> kappa 13/21
    assert agreement["fleiss_kappa"] == pytest.approx(13 / 21)
    assert agreement["all_agree"] == 0.75 and agreement["n_items"] == 4
    ci = human["win_rate"]
    assert ci["ci_low"] <= 0.5625 <= ci["ci_high"] and 0 <= ci["ci_low"] < ci["ci_high"] <= 1


def _results(tmp_path):
    items = [{"id": f"q{i}", "prompt_text": f"user: question {i}\nwith a second line", "reference": "r",
              "slice": None, "tuned": {"prediction": f"tuned answer {i}", "scores": {}},
              "base": {"prediction": f"base answer {i}", "scores": {}}} for i in range(6)]
    items.append({"id": "probe:x", "prompt_text": "p", "reference": "refuse",
                  "tuned": {"prediction": "t"}, "base": {"prediction": "b"}})
    results = {"task": "t", "n_items": 7, "metrics": ["exact_match"], "comparison": {}, "notes": [],
               "models": {"tuned": {"source": "tuned-model", "summary": {"exact_match": 0.5}, "slices": {}},
                          "base": {"source": "base-model", "summary": {"exact_match": 0.4}, "slices": {}}},
               "items": items}
    path = tmp_path / "eval" / "results.json"
    path.parent.mkdir()
    path.write_text(json.dumps(results))
    return path


def test_blinding_round_trip_sheet_to_results_and_gate(tmp_path):
    from tuneforge.eval.gates import evaluate_gates

    path = _results(tmp_path)
    sheet = tmp_path / "sheet"
    runner = CliRunner()
    made = runner.invoke(app, ["eval", str(tmp_path), "--human-sheet", str(sheet), "--n", "4", "--seed", "3"])
    assert made.exit_code == 0, made.output
    key = json.loads((sheet / "key.json").read_text())
    assert len(key["items"]) == 4 and not any(i.startswith("probe:") for i in key["items"])
    assert sorted(s["A"] for s in key["items"].values()) == ["base", "base", "tuned", "tuned"]  # balanced
    rows = list(csv.DictReader(io.StringIO((sheet / "sheet.csv").read_text())))
    assert [r["item_id"] for r in rows] and all(r["choice"] == "" for r in rows)
    assert "tuned-model" not in (sheet / "sheet.csv").read_text()
    for row in rows:  # blinding: A/B show the answers the key says
        sides = key["items"][row["item_id"]]
        assert row["answer_a"].startswith(sides["A"]) and row["answer_b"].startswith(sides["B"])
    html = (sheet / "form.html").read_text()
    assert html.count('type="radio"') == 12 and "download choices" in html and "tuned answer" in html
    # rater alice always picks the tuned answer; bob picks base on the first item, a tie on the second, tuned after
    alice, bob = io.StringIO(), io.StringIO()
    for out, choose in ((alice, lambda k, s: "A" if s["A"] == "tuned" else "B"),
                        (bob, lambda k, s: ["A" if s["A"] == "base" else "B", "TIE"][k] if k < 2 else
                         ("a" if s["A"] == "tuned" else "b"))):
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        for k, row in enumerate(rows):
            writer.writerow({**row, "choice": choose(k, key["items"][row["item_id"]])})
    (sheet / "alice.csv").write_text(alice.getvalue())
    (sheet / "bob.csv").write_text(bob.getvalue())
    merged = runner.invoke(app, ["eval", str(path), "--human-results", str(sheet / "alice.csv"),
                                 str(sheet / "bob.csv")])
    assert merged.exit_code == 0, merged.output
    results = json.loads(path.read_text())
    human = results["human"]
    # alice: 4 wins; bob: loss, tie, win, win -> item scores .5, .75, 1, 1 -> .8125
    assert human["win_rate"]["mean"] == pytest.approx(0.8125)
    assert human["per_rater"]["alice"]["tuned"] == 4 and human["per_rater"]["bob"]["base"] == 1
    assert results["models"]["tuned"]["summary"]["human_win_rate"] == pytest.approx(0.8125)
    assert results["models"]["tuned"]["summary"]["exact_match"] == 0.5  # the rest of the results is kept
    outcome = evaluate_gates(results, ["human_win_rate >= 0.6", "human_tie_rate <= 0.05"])
    assert [o.passed for o in outcome] == [True, False]
    assert "win rate 0.812" in merged.output.replace("\n", " ")
    again = runner.invoke(app, ["eval", str(path), "--human-sheet", str(sheet)])
    assert again.exit_code == 2 and "not an empty folder" in again.output


def test_rating_file_errors_name_file_and_line(tmp_path):
    known = {"q1", "q2"}
    path = tmp_path / "r.csv"
    # the first record spans lines 2-3 (a newline inside a quoted prompt): the bad row is on line 4
    path.write_text('item_id,prompt,choice\nq1,"two\nlines",A\nq2,x,maybe\n')
    with pytest.raises(DataError, match=r"r\.csv:4: choice 'maybe': write A, B or tie"):
        read_choices(path, known)
    path.write_text("item_id,choice\nq9,A\n")
    with pytest.raises(DataError, match=r"r\.csv:2: item_id 'q9' is not on the sheet"):
        read_choices(path, known)
    path.write_text("item_id,choice\nq1,A\nq1,B\n")
    with pytest.raises(DataError, match=r"r\.csv:3: item 'q1' rated twice \(first on line 2\)"):
        read_choices(path, known)
    path.write_text("item_id,choice\nq1,\n")
    with pytest.raises(DataError, match=r"r\.csv:2: choice '': write A, B or tie; delete the row"):
        read_choices(path, known)
    path.write_text("id,pick\nq1,A\n")
    with pytest.raises(DataError, match=r"r\.csv:1: no column item_id, choice"):
        read_choices(path, known)
    path.write_text("\ufeffitem_id,choice\nq1,tie\n\nq2,b\n")  # BOM and a blank line are fine
    assert read_choices(path, known) == {"q1": "tie", "q2": "B"}


def test_human_sheet_needs_a_base_model(tmp_path):
    from tuneforge.eval.human.sheet import build_sheet

    path = _results(tmp_path)
    results = json.loads(path.read_text())
    del results["models"]["base"]
    with pytest.raises(ConfigError, match="needs base and tuned answers"):
        build_sheet(results, 5, 0)
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "nowhere"), "--human-sheet", str(tmp_path / "s")])
    assert result.exit_code == 2 and "no results.json" in result.output


def test_human_steps_and_gates_read_results_through_one_reader(tmp_path):
    """A malformed or foreign results.json is refused the same way by every consumer: exit 2, naming the file."""
    from tuneforge.eval.gates import ResultsError
    from tuneforge.eval.pipeline import read_results

    broken = tmp_path / "broken" / "results.json"
    broken.parent.mkdir()
    broken.write_text('{"models": {},\n "items": [,]}')
    with pytest.raises(ResultsError, match=r"results.json:2: not valid JSON"):
        read_results(broken)
    no_items = tmp_path / "gated-only" / "results.json"
    no_items.parent.mkdir()
    no_items.write_text(json.dumps({"models": {"tuned": {"summary": {"exact_match": 0.9}}}}))
    assert read_results(no_items)["models"]  # enough for gates
    with pytest.raises(ResultsError, match="no 'items'"):
        read_results(no_items, items=True)
    gates = tmp_path / "gates.yaml"
    gates.write_text("gates:\n  - 'exact_match >= 0.5'\n")
    for args in (["eval", str(broken), "--human-sheet", str(tmp_path / "s")],
                 ["eval", str(no_items), "--human-sheet", str(tmp_path / "s")],
                 ["gate", str(broken), "--gates", str(gates)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "results.json" in result.output
    assert CliRunner().invoke(app, ["gate", str(no_items), "--gates", str(gates)]).exit_code == 0


_DOM_STUB = """
var picks = JSON.parse(process.argv[2]), out = {};
var items = picks.map(function(p){return {dataset: {id: p[0]},
  querySelector: function(){return p[1] === null ? null : {value: p[1]};}};});
global.document = {querySelectorAll: function(){return items;}, getElementById: function(){return {value: 'Ann Lee'};},
  createElement: function(){return {click: function(){out.name = this.download;}, remove: function(){}};},
  body: {appendChild: function(){}}};
global.confirm = function(message){out.confirm = message; return true;};
global.Blob = function(parts){out.text = parts.join('');};
global.URL = {createObjectURL: function(){return 'blob:x';}};
"""


@pytest.mark.skipif(__import__("shutil").which("node") is None, reason="needs node to run the form's script")
def test_form_download_script_writes_choices_the_reader_accepts(tmp_path):
    import re
    import subprocess

    from tuneforge.eval.human.sheet import sheet_html

    html = sheet_html([], "t")
    script = re.search(r"<script>(.*)</script>", html, re.S).group(1)
    picks = [["q1", "A"], ['q"2,x', "tie"], ["q3", None]]  # an id with a quote and a comma; q3 left unanswered
    (tmp_path / "form.js").write_text(_DOM_STUB + script + "\nsave(); console.log(JSON.stringify(out));")
    ran = subprocess.run(["node", str(tmp_path / "form.js"), json.dumps(picks)], capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 0, ran.stderr
    out = json.loads(ran.stdout)
    assert out["name"] == "choices-Ann_Lee.csv" and out["confirm"].startswith("1 item(s) have no choice")
    (tmp_path / "ann.csv").write_text(out["text"])
    assert read_choices(tmp_path / "ann.csv", {"q1", 'q"2,x', "q3"}) == {"q1": "A", 'q"2,x': "tie"}
