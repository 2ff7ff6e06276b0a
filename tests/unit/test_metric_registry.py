"""The one metric registry: a metric added with one function + one registry call is usable everywhere at once -
a task YAML, a training config, a gate and an RL reward - and metric names live in one module only."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tuneforge.eval import registry

SRC = Path(__file__).resolve().parents[2] / "src" / "tuneforge"


def shouting(prediction: str, reference: str) -> float:
    """Share of the answer's letters in upper case (a toy metric for this test)."""
    letters = [c for c in prediction if c.isalpha()]
    return sum(c.isupper() for c in letters) / len(letters) if letters else 0.0


@pytest.fixture()
def added_metric():
    registry.register_metric("shouting", shouting)
    yield "shouting"
    registry.unregister_metric("shouting")


class _Answers:
    """A model that answers from a fixed list: what the pipeline needs from an endpoint-like model."""

    supports_logprobs = False
    name = "fixed"

    def __init__(self, answers):
        self.answers = answers

    def answer(self, items, **_):
        return self.answers[: len(items)]


def test_a_new_metric_works_in_task_yaml_training_config_gate_and_rl_reward(added_metric, tmp_path):
    from tuneforge.config.loader import load_config
    from tuneforge.eval.gates import evaluate_gates, known_metric_names, parse_gate_file
    from tuneforge.eval.pipeline import assemble_results, compare_sides, evaluate_side
    from tuneforge.eval.tasks import items_from_task, load_task
    from tuneforge.objectives.rewards import resolve_reward

    # 1. a task YAML names it
    (tmp_path / "d.jsonl").write_text('{"q": "hi", "a": "HELLO"}\n{"q": "yo", "a": "HEY"}\n')
    (tmp_path / "task.yaml").write_text("name: loud\ndata: d.jsonl\nprompt: '{q}'\nreference: a\n"
                                        "metrics: [shouting, exact_match]\n")
    spec = load_task(tmp_path / "task.yaml")
    items = items_from_task(spec, tmp_path / "task.yaml")
    sides = {name: evaluate_side(_Answers(answers), name, items, metrics=spec.metrics)
             for name, answers in (("tuned", ["HELLO", "HEY there"]), ("base", ["hello", "hey"]))}
    comparison = compare_sides(sides["base"], sides["tuned"], spec.metrics, seed=0, n_resamples=200)
    results = assemble_results("loud", spec.metrics, items, sides, comparison, [], {})
    assert results["models"]["tuned"]["summary"]["shouting"] == pytest.approx((1.0 + 3 / 8) / 2)
    assert results["comparison"]["shouting"]["delta"] > 0

    # 2. a training config takes it
    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(repo / "examples" / "lora-contact-extraction.yaml", ["eval.metrics=[shouting,json_fields]"])
    assert cfg.eval.metrics == ["shouting", "json_fields"]

    # 3. a gate reads it (a known name: never exit 2), on those results
    gates = parse_gate_file("gates:\n  - 'shouting >= 0.6'\n  - 'shouting delta_vs_base ci_low >= 0'\n",
                            known_metrics=known_metric_names())
    assert [o.passed for o in evaluate_gates(results, gates)] == [True, True]

    # 4. an RL reward uses it
    assert resolve_reward("shouting")(None, ["LOUD", "quiet"], reference=["x", "y"]) == [1.0, 0.0]

    # and the CLI lists it
    assert ("shouting", "item", "Share of the answer's letters in upper case (a toy metric for this test).") in \
        registry.listing()


def test_unknown_metric_names_are_config_errors_everywhere(tmp_path):
    from tuneforge.config.loader import load_config
    from tuneforge.errors import ConfigError

    repo = Path(__file__).resolve().parents[2]
    with pytest.raises(ConfigError, match="eval.metrics.*unknown metric 'rougel'"):
        load_config(repo / "examples" / "lora-contact-extraction.yaml", ["eval.metrics=[rougel]"])
    with pytest.raises(ConfigError, match="not computed from answers.*--probes"):
        registry.split_metrics(["refusal_rate"])


def test_no_second_list_of_metric_names():
    """No source module outside the registry holds a literal list/set/tuple/dict naming two or more registered
    metrics: a second list of names is what let the two evaluation pipelines drift apart."""
    names = set(registry.REGISTRY)
    literal = re.compile(r"[\[{(]([^\[\]{}()]*)[\]})]")
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "registry.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in literal.finditer(line):
                quoted = set(re.findall(r"[\"']([A-Za-z_@.0-9]+)[\"']", match.group(1)))
                if len(quoted & names) >= 2:
                    offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    # rouge-score's own scorer keys (its API), which the registry's rouge1/rouge2/rougeL functions wrap.
    offenders = [o for o in offenders if not o.startswith("eval/text_metrics.py") or "ROUGE_TYPES =" not in o]
    assert not offenders, "\n".join(offenders)
