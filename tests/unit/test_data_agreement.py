"""Agreement statistics against textbook values, and the agreement report on files with missing rows."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tuneforge.data.labeling.agreement import (
    agreement_report,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha_nominal,
    read_annotations,
)
from tuneforge.errors import DataError

# Fleiss (1971) as tabulated on Wikipedia's "Fleiss' kappa" page: 10 subjects, 14 raters, 5 categories.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", section C: 4 observers, 12 units, "." missing.
KRIPP = [
    "1 2 3 3 2 1 4 1 2 . . .",
    "1 2 3 3 2 2 4 1 2 5 . 3",
    ". 3 3 3 2 3 4 2 2 5 1 .",
    "1 2 3 3 2 4 4 1 2 5 1 .",
]


def test_fleiss_kappa_matches_the_wikipedia_worked_example():
    # P-bar = 0.378, P-bar_e = 0.213 -> kappa = 0.210 (Wikipedia rounds to three places).
    assert fleiss_kappa(np.array(FLEISS_TABLE)) == pytest.approx(0.2099, abs=5e-4)


def test_fleiss_kappa_refuses_uneven_rater_counts():
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa(np.array([[2, 0], [1, 2]]))


def test_krippendorff_alpha_nominal_matches_krippendorff_2011():
    observers = [row.split() for row in KRIPP]
    units = [[obs[u] for obs in observers if obs[u] != "."] for u in range(12)]
    assert krippendorff_alpha_nominal(units) == pytest.approx(0.743, abs=5e-4)


def test_cohen_kappa_hand_worked():
    # 50 rows: both yes 20, both no 15, A yes/B no 5, A no/B yes 10. p_o = 0.70; A says yes 25/50, B 30/50:
    # p_e = 0.5*0.6 + 0.5*0.4 = 0.50 -> kappa = (0.70 - 0.50) / 0.50 = 0.40.
    a = ["y"] * 20 + ["n"] * 15 + ["y"] * 5 + ["n"] * 10
    b = ["y"] * 20 + ["n"] * 15 + ["n"] * 5 + ["y"] * 10
    assert cohen_kappa(a, b) == pytest.approx(0.40)
    assert math.isnan(cohen_kappa(["x", "x"], ["x", "x"]))


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_report_matches_rows_by_id_reports_missing_rows_and_lists_disagreements(tmp_path):
    a = _write(tmp_path / "ann_a.jsonl", [{"id": 1, "label": "pos"}, {"id": 2, "label": "neg"},
                                          {"id": 3, "label": "pos"}, {"id": 4, "label": "neg"}])
    # b lists the rows in another order, lacks row 4 and has a row 5 that a does not
    b = _write(tmp_path / "ann_b.jsonl", [{"id": 3, "label": "neg"}, {"id": 1, "label": "pos"},
                                          {"id": 2, "label": "neg"}, {"id": 5, "label": "pos"}])
    report = agreement_report([read_annotations(p, "label", "id") for p in (a, b)])
    assert report["rows"] == 5
    assert report["missing"] == {"ann_a": ["5"], "ann_b": ["4"]}
    # Shared rows 1..3: agree on 1 (pos) and 2 (neg), disagree on 3. p_o = 2/3; a: pos 2/3, b: pos 1/3:
    # p_e = 2/9 + 2/9 = 4/9 -> kappa = (2/3 - 4/9) / (5/9) = 0.4.
    pair = report["overall"]["cohen_kappa"]["ann_a vs ann_b"]
    assert pair == {"kappa": pytest.approx(0.4), "rows": 3}
    assert report["overall"]["fleiss_rows"] == 3
    assert [r["id"] for r in report["adjudicate"]] == ["3"]
    assert report["adjudicate"][0]["labels"] == {"ann_a": "pos", "ann_b": "neg"}
    assert report["adjudicate"][0]["where"] == {"ann_a": f"{a}:3", "ann_b": f"{b}:1"}
    # Two labels: one-vs-rest of either is the same binary problem, so the same kappa.
    assert report["per_label"]["pos"]["cohen_kappa_mean"] == pytest.approx(0.4)


def test_duplicate_or_missing_id_is_an_error_naming_file_and_line(tmp_path):
    bad = _write(tmp_path / "bad.jsonl", [{"id": 1, "label": "a"}, {"label": "b"}, {"id": 1, "label": "c"}])
    with pytest.raises(DataError) as info:
        read_annotations(bad, "label", "id")
    assert f"{bad}:2: id: missing" in info.value.message and f"{bad}:3: id: duplicate id '1'" in info.value.message


def test_cli_writes_the_adjudication_sheet_and_prints_the_statistics(tmp_path):
    from typer.testing import CliRunner

    from tuneforge.cli.main import app

    observers = [row.split() for row in KRIPP]
    paths = [_write(tmp_path / f"obs{k}.jsonl", [{"id": u, "label": int(obs[u])} if obs[u] != "." else {"id": u}
                                                 for u in range(12)])
             for k, obs in enumerate(observers)]
    out, report = tmp_path / "adj.jsonl", tmp_path / "report.json"
    result = CliRunner().invoke(app, ["data", "agreement", *paths, "--out", str(out), "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "0.743" in result.output and "to adjudicate" in result.output
    saved = json.loads(report.read_text())
    assert saved["overall"]["krippendorff_alpha"] == pytest.approx(0.743, abs=5e-4)
    # Units where the present values differ: 2 (2,2,3,2), 6 (1,2,3,4), 8 (1,1,2,1) -> ids 1, 5, 7.
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["1", "5", "7"]
    assert saved["unlabelled"]["obs0"] == ["9", "10", "11"]
