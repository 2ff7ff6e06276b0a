"""`tuneforge gate` exit codes and output, and the shipped example gate files."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneforge.cli.gate import app
from tuneforge.eval.gates import load_gate_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "gates"
RESULTS = {
    "models": {
        "base": {"summary": {"exact_match": 0.70, "rougeL": 0.30}},
        "tuned": {"summary": {"exact_match": 0.85, "rougeL": 0.36}, "slices": {"safety": {"refusal_rate": 0.96}}},
    },
    "comparison": {"rougeL": {"delta": 0.06, "ci_low": 0.02, "ci_high": 0.10}},
}
runner = CliRunner()


@pytest.fixture()
def results_file(tmp_path: Path) -> Path:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(RESULTS))
    return path


def write_gates(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "gates.yaml"
    path.write_text("gates:\n" + "".join(f"  - {line}\n" for line in lines))
    return path


def test_all_pass_exits_0(tmp_path, results_file):
    gates = write_gates(tmp_path, '"exact_match >= 0.8"', '"rougeL delta_vs_base >= 5"',
                        '"refusal_rate >= 95 on safety"')
    res = runner.invoke(app, [str(results_file), "--gates", str(gates)])
    assert res.exit_code == 0, res.output
    assert "all 3 gate(s) passed" in res.output


def test_a_failing_or_missing_gate_exits_1_and_writes_json(tmp_path, results_file):
    gates = write_gates(tmp_path, '"exact_match >= 0.9"', '"bleu >= 0.2"', '"rougeL >= 0.3"')
    out = tmp_path / "gates.json"
    res = runner.invoke(app, [str(results_file), "-g", str(gates), "--json", str(out)])
    assert res.exit_code == 1, res.output
    assert "2 of 3 gate(s) failed" in res.output
    payload = json.loads(out.read_text())
    assert payload["passed"] is False
    assert [o["passed"] for o in payload["outcomes"]] == [False, False, True]
    assert "missing" in payload["outcomes"][1]["reason"]


@pytest.mark.parametrize(
    "lines, message",
    [(['"exact_match ~ 0.8"'], "gate line 2"), (['"exact_mach >= 0.8"'], "unknown metric 'exact_mach'")],
)
def test_malformed_gate_file_exits_2(tmp_path, results_file, lines, message):
    res = runner.invoke(app, [str(results_file), "--gates", str(write_gates(tmp_path, *lines))])
    assert res.exit_code == 2
    assert message in res.output


def test_unusable_results_exit_2(tmp_path):
    gates = write_gates(tmp_path, '"exact_match >= 0.8"')
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert runner.invoke(app, [str(bad), "--gates", str(gates)]).exit_code == 2
    assert runner.invoke(app, [str(tmp_path / "absent.json"), "--gates", str(gates)]).exit_code == 2
    assert runner.invoke(app, [str(bad), "--gates", str(tmp_path / "absent.yaml")]).exit_code == 2


def test_help_describes_the_options():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for option in ("--gates", "--model", "--base", "--json"):
        assert option in res.output


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_gate_files_parse_and_name_their_command(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# tuneforge gate ")
    argv = shlex.split(first[2:])
    assert argv[argv.index("--gates") + 1] == f"examples/gates/{path.name}"
    # Names are only checked against a results file at gate time; here the grammar and units must hold.
    assert load_gate_file(path)


def test_example_files_exist():
    assert (EXAMPLES / "quickstart.yaml").exists()


def test_a_missing_metric_fails_with_what_produces_it_printed_whole(results_file, tmp_path):
    """Exit 1 (not 2) for a known metric the results lack; the hint's `[NAME]` survives rich's markup parser."""
    gates = tmp_path / "g.yaml"
    gates.write_text("gates:\n  - 'json_fields delta_vs_base ci_low >= 0'\n  - 'over_refusal_rate <= 0.1 on safety'\n")
    result = runner.invoke(app, [str(results_file), "--gates", str(gates)])
    assert result.exit_code == 1, result.output
    flat = " ".join(result.output.replace("│", " ").split())
    assert "eval.metrics: [json_fields]" in flat
    assert "over_refusal_rate" in flat and "--probes" in flat
    verdicts = json.loads(results_file.with_name("gates.json").read_text())
    assert [o["passed"] for o in verdicts["outcomes"]] == [False, False]
