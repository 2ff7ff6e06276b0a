"""Active learning: uncertainty from the engine's label log-probs and greedy answers, diversity by clusters."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tuneforge.data.labeling.select import (
    PoolRow,
    answer_entropy,
    label_uncertainty,
    read_pool,
    select_rows,
)
from tuneforge.errors import DataError


def test_label_entropy_and_margin_hand_worked():
    rows = [{"a": math.log(0.5), "b": math.log(0.5)}, {"a": math.log(0.9), "b": math.log(0.1)},
            # unnormalised (label log-probs need not sum to 1): 0.02 vs 0.06 -> p = 0.25 / 0.75
            {"a": math.log(0.02), "b": math.log(0.06)}]
    # H(0.9, 0.1) = -(0.9 ln 0.9 + 0.1 ln 0.1) / ln 2 = 0.46900; H(0.25, 0.75) = 0.81128
    assert label_uncertainty(rows, ["a", "b"], "entropy") == pytest.approx([1.0, 0.46900, 0.81128], abs=1e-5)
    assert label_uncertainty(rows, ["a", "b"], "margin") == pytest.approx([1.0, 0.2, 0.5])


class GridEmbedder:
    """Texts name their point: "x,y"."""

    def embed(self, texts):
        return np.array([[float(v) for v in t.split(",")] for t in texts])


def _pool(points):
    return [PoolRow(i, f"pool.jsonl:{i + 1}", {"id": i}, {"messages": None, "prompt": p}, p)
            for i, p in enumerate(points)]


def test_diversity_takes_one_row_per_cluster_instead_of_the_two_most_uncertain():
    # Rows 0-2 sit together near (0, 0), rows 3-4 near (10, 10). The two most uncertain are 0 and 1 (same cluster):
    # plain uncertainty takes both, diversity takes the centre-most row of each cluster.
    pool = _pool(["0,0", "0,1", "1,0", "10,10", "10,11"])
    uncertainty = [0.9, 0.8, 0.7, 0.6, 0.5]
    plain = select_rows(pool, uncertainty, budget=2)
    assert [r["id"] for r in plain.rows] == [0, 1]
    diverse = select_rows(pool, uncertainty, budget=2, embedder=GridEmbedder(), prefilter=10)
    # Weighted centre of {0,1,2} = (0.7/2.4, 0.8/2.4) = (0.29, 0.33): row 0 is nearest (0.44; rows 1, 2: 0.74, 0.78).
    # Centre of {3,4} = (10, 10.45): row 3 at 0.45, row 4 at 0.55.
    assert [r["id"] for r in diverse.rows] == [0, 3]
    second = dict(diverse.rows[1]["selection"])
    assert second.pop("cluster") != diverse.rows[0]["selection"]["cluster"]
    assert second == {"rank": 2, "uncertainty": 0.6, "measure": "entropy", "uncertainty_rank": 4,
                      "where": "pool.jsonl:4", "cluster_size": 2}
    assert diverse.rows[0]["selection"]["cluster_size"] == 3


def test_prefilter_limits_the_candidates_to_the_most_uncertain():
    pool = _pool(["0,0", "0,1", "10,10", "10,11", "20,20"])
    chosen = select_rows(pool, [0.9, 0.8, 0.1, 0.2, 0.3], budget=1, embedder=GridEmbedder(), prefilter=2)
    assert chosen.candidates == 2 and [r["id"] for r in chosen.rows] == [0]


def test_read_pool_prompts_and_errors(tmp_path):
    path = tmp_path / "pool.jsonl"
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "old"}]},
            {"prompt": "Q: 2+2\nA:"}, {"instruction": "Sum", "input": "2 2"}, {"text": "plain"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pool = read_pool(str(path))
    assert pool[0].item == {"messages": [{"role": "user", "content": "hi"}], "prompt": None}
    assert pool[1].item == {"messages": None, "prompt": "Q: 2+2\nA:"}
    assert pool[2].item["messages"][0]["content"] == "Sum\n\n2 2" and pool[3].text == "plain"
    path.write_text(json.dumps({"review": "good"}) + "\n")
    assert read_pool(str(path), "Review: {review}")[0].text == "Review: good"
    path.write_text(json.dumps({"review": "good"}) + "\n" + json.dumps({"other": 1}) + "\n")
    with pytest.raises(DataError, match=r"pool.jsonl:2: no field review for --prompt"):
        read_pool(str(path), "Review: {review}")


def test_answer_entropy_is_the_mean_entropy_over_the_greedy_answer_steps(tiny_model, tokenizer):
    from tuneforge.models.inference import InferenceEngine

    engine = InferenceEngine(tiny_model, tokenizer)
    items = [{"messages": [{"role": "user", "content": "Name a colour."}], "prompt": None},
             {"messages": None, "prompt": "The capital of France is"}]
    got = answer_entropy(engine, items, max_new_tokens=5, batch_size=2)
    for item, value in zip(items, got):
        completion = engine.generate([item], max_new_tokens=5, progress=False)[0]
        prompt = engine.prompt_ids(item)
        ids = torch.tensor([prompt + completion.token_ids])
        with torch.no_grad():
            logp = torch.log_softmax(tiny_model(input_ids=ids).logits[0].float(), -1)
        steps = range(len(prompt) - 1, len(prompt) + len(completion.token_ids))  # answer tokens + the stop step
        expected = float(np.mean([-(logp[t].exp() * logp[t]).sum().item() for t in steps]))
        assert value == pytest.approx(expected, rel=1e-4)


def test_cli_selects_a_label_task_budget_and_writes_scores(tmp_path, tiny_model_dir):
    from tuneforge.cli.main import app

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": i, "review": f"review number {i}"}) + "\n" for i in range(6)))
    out = tmp_path / "to_label.jsonl"
    result = CliRunner().invoke(app, ["data", "select", str(pool), "--model", str(tiny_model_dir), "--budget", "3",
                                      "--labels", "good,bad", "--prompt", "Review: {review}\nSentiment:",
                                      "--no-diversity", "--out", str(out)])
    assert result.exit_code == 0, result.output
    chosen = [json.loads(line) for line in out.read_text().splitlines()]
    assert [c["selection"]["rank"] for c in chosen] == [1, 2, 3]
    scores = [c["selection"]["uncertainty"] for c in chosen]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert "3 of 6 rows by label entropy" in result.output
