"""pass@k code tasks: the unbiased estimator against hand-worked values, code extraction, scoring one item's samples
in the sandbox, and the `kind: code` task YAML with errors naming file:line: field."""
from __future__ import annotations

import math
import textwrap

import pytest

from tuneforge.errors import ConfigError, DataError
from tuneforge.eval.sandbox import (
    SandboxLimits,
    SandboxUnavailableError,
    check_confinement,
    extract_code,
    pass_at_k,
    score_code_samples,
)
from tuneforge.eval.tasks import items_from_task, load_task


def _unavailable() -> str | None:
    try:
        check_confinement()
    except SandboxUnavailableError as exc:
        return exc.message
    return None


needs_sandbox = pytest.mark.skipif(_unavailable() is not None, reason=f"sandbox unavailable: {_unavailable()}")
LIMITS = SandboxLimits(timeout_s=10.0, memory_mb=256)
TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
GOOD = "def add(a, b):\n    return a + b\n"
FENCED_GOOD = "Here you go:\n```python\ndef add(a, b):\n    return b + a\n```\nIt adds."
WRONG = "def add(a, b):\n    return a - b\n"


def test_pass_at_k_formula():
    # n = 5, c = 2, k = 2: 1 - C(3, 2) / C(5, 2) = 1 - 3/10 = 0.7.
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is c / n
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(4, 3, 2) == 1.0  # n - c < k: every pair contains a pass
    for n, c, k in [(7, 2, 3), (20, 5, 10), (200, 37, 100)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), rel=1e-12)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_extract_code_takes_python_fences_or_the_whole_reply():
    assert extract_code(GOOD) == GOOD
    assert extract_code(FENCED_GOOD) == "def add(a, b):\n    return b + a\n"
    two = "```py\nx = 1\n```\n```text\nnot code\n```\n```\ny = 2\n```"
    assert extract_code(two) == "x = 1\n\ny = 2\n"
    assert extract_code("```python\ndef f():\n    return 1\n") == "def f():\n    return 1\n"  # cut off mid-reply


@needs_sandbox
def test_score_code_samples_matches_hand_worked_pass_at_k():
    # 5 samples, 2 pass (one of them fenced). By hand: pass@1 = 2/5 = 0.4;
    # pass@2 = 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7; pass@3 = 1 - C(3,3)/C(5,3) = 1 - 1/10 = 0.9.
    samples = [WRONG, GOOD, "def add(a, b)\n    return 0\n", FENCED_GOOD, "while True:\n    pass\n"]
    out = score_code_samples(samples, TESTS, [1, 2, 3], SandboxLimits(timeout_s=2.0, memory_mb=256), workers=2)
    assert (out["n"], out["c"]) == (5, 2)
    assert out["scores"] == pytest.approx({"pass@1": 0.4, "pass@2": 0.7, "pass@3": 0.9})
    assert [r.status for r in out["results"]] == ["failed", "passed", "error", "passed", "timeout"]


def test_score_code_samples_rejects_k_beyond_the_samples():
    with pytest.raises(ValueError, match=r"1 <= k <= n = 2 samples; got k = \[1, 5\]"):
        score_code_samples([GOOD, WRONG], TESTS, [1, 5])
    with pytest.raises(ValueError, match="at least one sample"):
        score_code_samples([], TESTS, [1])


def _task(tmp_path, body: str, rows: str | None = None):
    rows = rows if rows is not None else (
        '{"id": "add", "text": "Add two numbers.", "tests": "assert add(2, 3) == 5"}\n'
        '{"id": "neg", "text": "Negate a number.", "tests": "assert neg(2) == -2", '
        '"reference": "def neg(x): return -x"}\n'
    )
    (tmp_path / "problems.jsonl").write_text(rows)
    path = tmp_path / "code.yaml"
    path.write_text(textwrap.dedent(body))
    return path


CODE_TASK = """\
    name: mini
    kind: code
    data: problems.jsonl
    prompt: "Write a Python function. {text}"
    metrics: [pass@1, pass@3]
    samples: 4
"""


@needs_sandbox
def test_a_code_task_yaml_loads_and_scores_end_to_end(tmp_path):
    path = _task(tmp_path, CODE_TASK)
    spec = load_task(path)
    assert (spec.kind, spec.samples, spec.pass_k()) == ("code", 4, [1, 3])
    items = items_from_task(spec, path)
    assert [(i["id"], i["tests"]) for i in items] == [("add", "assert add(2, 3) == 5"), ("neg", "assert neg(2) == -2")]
    assert items[0]["reference"] == "assert add(2, 3) == 5" and items[1]["reference"] == "def neg(x): return -x"
    assert items[0]["messages"][-1]["content"] == "Write a Python function. Add two numbers."
    replies = [GOOD, WRONG, FENCED_GOOD, WRONG]  # c = 2 of n = 4: pass@3 = 1 - C(2,3)/C(4,3) = 1
    out = score_code_samples(replies, items[0]["tests"], spec.pass_k(), LIMITS, workers=2)
    assert out["scores"] == pytest.approx({"pass@1": 0.5, "pass@3": 1.0})


def test_samples_default_to_the_largest_k(tmp_path):
    spec = load_task(_task(tmp_path, CODE_TASK.replace("    samples: 4\n", "")))
    assert spec.samples is None and max(spec.pass_k()) == 3


@pytest.mark.parametrize("change, message", [
    (("metrics: [pass@1, pass@3]", "metrics: [pass@1, pass@k]"),
     r"code.yaml:5: metrics: \['pass@k'\] - a code task is scored with pass@<k> metrics"),
    (("metrics: [pass@1, pass@3]", "metrics: [pass@1, exact_match]"), r"code.yaml:5: metrics: \['exact_match'\]"),
    (("metrics: [pass@1, pass@3]", "metrics: [pass@2, pass@2]"), r"code.yaml:5: metrics: .* repeat a k"),
    (("samples: 4", "samples: 2"), r"code.yaml:6: samples: 2 replies per item cannot estimate pass@3"),
    (("samples: 4", "samples: 0"), r"code.yaml: samples: Input should be greater than 0"),
    (('    prompt: "Write a Python function. {text}"\n', ""), r"code.yaml:2: prompt: a code task needs a prompt"),
    (("kind: code", "kind: kode"), r"code.yaml: kind: Input should be 'text' or 'code'"),
    (("kind: code", "kind: text"), r"code.yaml:5: metrics: \['pass@1', 'pass@3'\] run generated code; they need 'kind"),
])
def test_code_task_errors_name_the_yaml_field(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        load_task(_task(tmp_path, CODE_TASK.replace(*change)))


def test_code_only_fields_on_a_text_task_are_an_error(tmp_path):
    body = "name: t\ndata: problems.jsonl\nprompt: '{text}'\nreference: id\nmetrics: [exact_match]\ntimeout_s: 5\n"
    with pytest.raises(ConfigError, match=r"code.yaml:6: timeout_s: only for code tasks"):
        load_task(_task(tmp_path, body))


@pytest.mark.parametrize("rows, message", [
    ('{"id": "a", "text": "x"}\n', r"problems.jsonl:1: row has no field 'tests'"),
    ('{"id": "a", "text": "x", "tests": ""}\n', r"problems.jsonl:1: field 'tests' must be a non-empty string"),
    ('{"id": "a", "text": "x", "tests": "ok"}\n{"id": "b", "text": "x", "tests": "assert f(1) =="}\n',
     r"problems.jsonl:2: field 'tests' is not valid Python: invalid syntax \(line 1 of the tests\)"),
])
def test_code_task_rows_are_checked_before_generation(tmp_path, rows, message):
    path = _task(tmp_path, CODE_TASK, rows)
    with pytest.raises(DataError, match=message):
        items_from_task(load_task(path), path)


@needs_sandbox
def test_tuneforge_eval_runs_a_code_task_and_gates_pass_at_k(tmp_path, tiny_model_dir):
    """The CLI path: the engine samples n programs per item, the sandbox runs them, results carry pass@k that a
    gate reads (a tiny random model writes no working program, so pass@k is 0 - and the gate fails for that)."""
    import json

    from typer.testing import CliRunner

    from tuneforge.cli.main import app

    path = _task(tmp_path, CODE_TASK)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", str(tiny_model_dir), "--task", str(path), "--out", str(out),
                                      "--max-new-tokens", "8", "--no-report"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"] == ["pass@1", "pass@3"]
    assert results["models"]["tuned"]["summary"] == {"pass@1": 0.0, "pass@3": 0.0}
    assert all(len(row["tuned"]["samples"]) == 4 for row in results["items"])
    (tmp_path / "gates.yaml").write_text("gates:\n  - 'pass@1 >= 0.5'\n")
    gated = CliRunner().invoke(app, ["gate", str(out / "results.json"), "--gates", str(tmp_path / "gates.yaml")])
    assert gated.exit_code == 1 and "pass@1" in gated.output
