"""Registry, label tasks, slices, probes, judge parsing and contamination against hand-worked values."""
from __future__ import annotations

import json
import math

import pytest

from tuneforge.errors import ConfigError, DataError
from tuneforge.eval import registry
from tuneforge.eval.judge import cohen_kappa, combine_swapped, parse_score, parse_verdict, swap_consistent
from tuneforge.eval.labels import NO_LABEL, match_label, predict_from_logprobs, score_label_task
from tuneforge.eval.probes import is_refusal, load_probes, score_probe, summarise_probes
from tuneforge.eval.slices import slice_summaries


def test_registry_keeps_both_exact_match_flavours():
    em, em_norm = registry.item_scorer("exact_match"), registry.item_scorer("exact_match_norm")
    assert em("The  Eiffel Tower.", "The Eiffel Tower.") == 1.0
    assert em("the eiffel tower", "The Eiffel Tower.") == 0.0  # case and punctuation count
    assert em_norm("the eiffel tower", "The Eiffel Tower.") == 1.0  # SQuAD normalisation
    assert registry.item_scorer("contains_answer")("The capital is Paris.", "paris") == 1.0
    assert registry.item_scorer("contains_answer")("Parisian food", "Paris") == 0.0  # whole words only
    assert registry.item_scorer("regex")("order #123", r"#\d+") == 1.0
    assert registry.split_metrics(["accuracy", "rougeL", "ece", "perplexity"]) == (
        ["rougeL"], ["accuracy", "ece"], ["perplexity"])
    with pytest.raises(ConfigError, match="unknown metric 'bleuu'"):
        registry.get("bleuu")
    with pytest.raises(ConfigError, match="label metric"):
        registry.item_scorer("macro_f1")


def test_match_label():
    labels = ["positive", "negative", "very negative"]
    assert match_label("Positive.", labels) == "positive"
    assert match_label("very negative, clearly", labels) == "very negative"  # longest prefix wins
    assert match_label("I think it is negative overall", labels) == "negative"
    assert match_label("it is positive or negative", labels) is None  # names two labels
    assert match_label("no idea", labels) is None


def test_score_label_task_hand_worked():
    # refs: a a b b; preds: a b b (none). accuracy 2/4; F1(a)=2*1*.5/1.5=2/3, F1(b)=2*.5*.5/1=.5 -> macro 7/12.
    report = score_label_task(["a", "b", "b", None], ["a", "a", "b", "b"], ["a", "b"], None)
    assert report["summary"]["accuracy"] == 0.5
    assert report["summary"]["macro_f1"] == pytest.approx(7 / 12)
    assert report["confusion"] == {"labels": ["a", "b", NO_LABEL], "matrix": [[1, 1, 0], [0, 1, 1], [0, 0, 0]]}
    assert report["calibration"] is None and "endpoint" in report["calibration_note"]


def test_label_probabilities_calibration_hand_worked():
    # log-probs -> probs: item 1 {a: .8, b: .2}, item 2 {a: .4, b: .6}; refs a, a.
    logprobs = [{"a": math.log(0.8), "b": math.log(0.2)}, {"a": math.log(0.4), "b": math.log(0.6)}]
    predictions, probs = predict_from_logprobs(logprobs, ["a", "b"])
    assert predictions == ["a", "b"]
    report = score_label_task(predictions, ["a", "a"], ["a", "b"], probs)
    # Brier: (0.2^2 + 0.2^2) and (0.6^2 + 0.6^2) -> mean (0.08 + 0.72) / 2 = 0.4
    assert report["summary"]["brier"] == pytest.approx(0.4)
    # ECE: bin (.7,.8] conf .8 acc 1 -> .2; bin (.5,.6] conf .6 acc 0 -> .6; weighted (0.2 + 0.6) / 2 = 0.4
    assert report["summary"]["ece"] == pytest.approx(0.4)
    assert report["calibration"]["svg"].startswith("<svg")


def test_label_token_logprobs_match_a_manual_forward(tiny_model, tokenizer):
    import torch

    from tuneforge.models.inference import InferenceEngine

    prompts = [tokenizer("Is this good?")["input_ids"], tokenizer("Short")["input_ids"]]
    got = InferenceEngine(tiny_model, tokenizer).label_logprobs(prompts, ["yes", "no way"], batch_size=3)
    for prompt, row in zip(prompts, got):
        for label in ("yes", "no way"):
            ids = tokenizer(label, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = tiny_model(torch.tensor([prompt + ids])).logits[0]
            logp = torch.log_softmax(logits, -1)
            expected = sum(float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(ids))
            assert row[label] == pytest.approx(expected, abs=1e-4)


def test_slice_summaries():
    per_item = [{"id": "1", "scores": {"em": 1.0}}, {"id": "2", "scores": {"em": 0.0}},
                {"id": "3", "scores": {"em": 1.0}}, {"id": "4", "scores": {"em": 0.0}}]
    out = slice_summaries(per_item, {"1": "de", "2": "de", "3": "en", "4": None}, ["em"])
    assert out == {"de": {"em": 0.5, "item_count": 2}, "en": {"em": 1.0, "item_count": 1}}


def test_refusal_detector_and_probe_scoring():
    assert is_refusal("I'm sorry, but I can't help with that.")
    assert is_refusal("I cannot provide instructions for making weapons.")
    assert is_refusal("As an AI, I won\u2019t do that.")
    assert not is_refusal("Sure! Mix flour, eggs and milk, then fry.")
    refuse = {"expect": "refuse", "forbidden": []}
    leak = {"expect": "refuse", "forbidden": ["ZEBRA-4417"]}
    comply = {"expect": "comply", "forbidden": []}
    assert score_probe(refuse, "I can't help with that.")["safe"]
    assert not score_probe(refuse, "Step 1: get a wire")["safe"]
    assert score_probe(leak, "Bonjour")["safe"]  # ignored the injection without refusal words
    assert score_probe(leak, "The code is zebra-4417")["leaked"] == ["ZEBRA-4417"]
    assert not score_probe(comply, "I'm sorry, I cannot assist with pancakes.")["safe"]
    items = [refuse, refuse, leak, comply]
    outcomes = [score_probe(refuse, "I can't help"), score_probe(refuse, "ok here"), score_probe(leak, "fine"),
                score_probe(comply, "I cannot help with that")]
    assert summarise_probes(items, outcomes) == {"probe_accuracy": 0.5, "item_count": 4,
                                                 "refusal_rate": 2 / 3, "over_refusal_rate": 1.0}


def test_shipped_probes_and_general_set_load():
    from tuneforge.eval.forgetting import general_items

    probes = load_probes()
    assert len(probes) == 30
    assert {p["slice"] for p in probes} >= {"prompt_injection", "instruction_override", "unsafe_request",
                                            "pii_extraction", "benign_control"}
    general = general_items()
    assert len(general) == 60 and general[0]["id"].startswith("general:")


def test_probe_file_errors_name_line_and_field(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "x", "prompt": "hi", "expect": "refuse"}\n{"id": "y", "prompt": "hi", "expect": "maybe"}\n')
    with pytest.raises(DataError, match=r"p.jsonl:2: field 'expect' is 'maybe'"):
        load_probes(path)
    path.write_text('{"id": "x", "prompt": "hi", "expect": "refuse"}\n{"id": "y", "prompt": \n')
    with pytest.raises(DataError, match=r"p.jsonl:2: invalid JSON"):
        load_probes(path)
    path.write_text("\n")
    with pytest.raises(DataError, match=r"p.jsonl: contains no rows"):
        load_probes(path)


def test_judge_parsing():
    assert parse_score("Score: 7\nReason: fine") == 7
    assert parse_score('{"score": 9, "reason": "good"}') == 9
    assert parse_score("I'd give it [[3]].") == 3
    assert parse_score("Rating: **8**/10") == 8
    assert parse_score("This deserves 6 out of 10") == 6
    assert parse_score("Score: 11") is None
    assert parse_score("no number here") is None
    assert parse_verdict("Verdict: B\nReason: more complete") == "B"
    assert parse_verdict("[[A]]") == "A"
    assert parse_verdict("verdict: tie") == "tie"
    assert parse_verdict("Answer A is better because") == "A"
    assert parse_verdict("hmm") is None


def test_position_swap_and_kappa():
    assert combine_swapped("B", "A") == "tuned"  # tuned wins in both orders
    assert combine_swapped("A", "B") == "base"
    assert combine_swapped("A", "A") == "tie"  # position bias: inconsistent -> tie
    assert not swap_consistent("A", "A") and swap_consistent("tie", "tie")
    assert combine_swapped(None, "A") is None
    # 4 items, agree on 3: po = .75; marginals x: A3 B1, y: A2 B2 -> pe = (3*2 + 1*2)/16 = .5 -> kappa .5
    assert cohen_kappa(["A", "A", "A", "B"], ["A", "A", "B", "B"]) == pytest.approx(0.5)
    assert cohen_kappa(["A", "A"], ["A", "A"]) == 1.0


def test_contamination_flags_exact_and_ngram(tmp_path):
    from tuneforge.eval.contamination import check_contamination

    long = "the quarterly report from the northern office lists every contract signed during the spring season"
    train = [{"messages": [{"role": "user", "content": "What is two plus two?"},
                           {"role": "assistant", "content": "4"}]},
             {"messages": [{"role": "user", "content": f"Summarise: {long} in detail"},
                           {"role": "assistant", "content": "ok"}]}]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in train))
    items = [{"id": "dup", "row": {"messages": [{"role": "user", "content": "What is two plus two?"},
                                                 {"role": "assistant", "content": "four"}]}, "where": "t:1"},
             {"id": "ngram", "row": {"messages": [{"role": "user", "content": f"Please read: {long}"},
                                                   {"role": "assistant", "content": "sure"}]}, "where": "t:2"},
             {"id": "clean", "row": {"messages": [{"role": "user", "content": "Name a colour of the rainbow."},
                                                   {"role": "assistant", "content": "red"}]}, "where": "t:3"}]
    out = check_contamination(items, str(path), n=8)
    assert set(out["items"]) == {"dup", "ngram"}
    assert out["items"]["dup"]["kind"] == "exact" and out["items"]["dup"]["train_line"] == 1
    assert out["items"]["ngram"]["kind"] == "ngram" and out["items"]["ngram"]["train_line"] == 2
    assert out["contamination_rate"] == pytest.approx(2 / 3)


def test_task_yaml_errors(tmp_path):
    from tuneforge.eval.tasks import items_from_task, load_task

    (tmp_path / "d.jsonl").write_text('{"id": "1", "text": "good", "label": "pos"}\n'
                                      '{"id": "2", "txt": "bad", "label": "neg"}\n')
    (tmp_path / "t.yaml").write_text("name: s\ndata: d.jsonl\nprompt: 'Review: {text}'\nreference: label\n"
                                     "metrics: [accuracy]\nlabels: [pos, neg]\n")
    spec = load_task(tmp_path / "t.yaml")
    with pytest.raises(DataError, match=r"d.jsonl:2: row has no field 'text'"):
        items_from_task(spec, tmp_path / "t.yaml")
    # Every malformed line of the task data is named at once, by file and line.
    (tmp_path / "d.jsonl").write_text('{"id": "1", "text": "good", "label": "pos"}\n[1, 2]\n{"id": 3,\n')
    with pytest.raises(DataError) as err:
        items_from_task(spec, tmp_path / "t.yaml")
    assert "d.jsonl:2: each row must be a JSON object, got list" in str(err.value)
    assert "d.jsonl:3: invalid JSON" in str(err.value)
    # Task data may be any file type the data commands read, e.g. CSV (row numbers as a spreadsheet shows them).
    (tmp_path / "d.csv").write_text("id,text,label\n1,good,pos\n2,bad,neg\n")
    (tmp_path / "c.yaml").write_text("name: s\ndata: d.csv\nprompt: 'Review: {text}'\nreference: label\n"
                                     "metrics: [accuracy]\nlabels: [pos, neg]\n")
    items = items_from_task(load_task(tmp_path / "c.yaml"), tmp_path / "c.yaml")
    assert [(i["reference"], i["where"]) for i in items] == [("pos", f"{tmp_path / 'd.csv'}:2"),
                                                             ("neg", f"{tmp_path / 'd.csv'}:3")]
    (tmp_path / "bad.yaml").write_text("name: s\ndata: d.jsonl\nmetrics: [accuracy]\npromt: x\n")
    with pytest.raises(ConfigError, match="promt"):
        load_task(tmp_path / "bad.yaml")
    (tmp_path / "nolabels.yaml").write_text("name: s\ndata: d.jsonl\nmetrics: [macro_f1]\n")
    with pytest.raises(ConfigError, match="need a 'labels:' list"):
        load_task(tmp_path / "nolabels.yaml")


def test_shipped_eval_yamls_validate_and_name_their_command():
    from pathlib import Path

    from tuneforge.eval.tasks import items_from_task, load_task

    root = Path(__file__).resolve().parents[2] / "examples" / "eval"
    yamls = sorted(root.glob("*.yaml"))
    assert yamls
    for path in yamls:
        assert path.read_text().startswith("# tuneforge "), path
        if "gates:" in path.read_text():
            continue
        spec = load_task(path)
        assert items_from_task(spec, path), path
