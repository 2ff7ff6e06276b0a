"""Retrieval and citation metrics against hand-worked values; registry entries; reciprocal rank fusion."""
from __future__ import annotations

import math

import pytest

from tuneforge.eval import registry
from tuneforge.rag.metrics import (
    citation_scores,
    lexical_entails,
    ndcg_at_k,
    recall_at_k,
    reciprocal_rank,
    split_cited_sentences,
)
from tuneforge.rag.retrieve import rrf


def test_retrieval_metrics_hand_checked():
    retrieved = ["x", "a", "x", "y", "b"]  # repeats of a key count once: unique order x, a, y, b
    gold = ["a", "b"]
    assert recall_at_k(retrieved, gold, 2) == 0.5
    assert recall_at_k(retrieved, gold, 4) == 1.0
    assert reciprocal_rank(retrieved, gold) == 0.5
    assert reciprocal_rank(["x"], gold) == 0.0
    # relevant at unique ranks 2 and 4: (1/log2 3 + 1/log2 5) / (1 + 1/log2 3)
    expected = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(retrieved, gold, 5) == pytest.approx(expected)
    assert ndcg_at_k(["a", "b"], gold, 5) == pytest.approx(1.0)


def test_rrf_hand_checked():
    fused = dict(rrf([[1, 2, 3], [3, 1]], k=60))
    assert fused[1] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[3] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[2] == pytest.approx(1 / 62)
    assert [d for d, _ in rrf([[1, 2, 3], [3, 1]], k=60)] == [1, 3, 2]


def test_citation_precision_and_recall_worked_example():
    passages = ["Paris is the capital of France.",
                "The Eiffel Tower stands in Paris.",
                "Bananas are yellow fruit."]
    answer = ("Paris is the capital of France [1][3]. The Eiffel Tower stands in Paris [2]. "
              "It was built in 1889 [2]. Bananas grow on trees.")
    assert [c for _, c in split_cited_sentences(answer)] == [[1, 3], [2], [2], []]
    scores = citation_scores(answer, passages)
    # sentences: 1 supported (by [1]); 2 supported; 3 not (1889 not in [2]); 4 uncited -> recall 2/4
    assert scores["citation_recall"] == 0.5
    # citations: [1] precise (entails alone), [3] imprecise (not alone, and [1] suffices without it),
    # [2] in s2 precise, [2] in s3 not (sentence unsupported) -> precision 2/4
    assert scores["citation_precision"] == 0.5
    assert scores["citations"] == 4 and scores["sentences"] == 4


def test_lexical_entailment_threshold():
    assert lexical_entails("the cat sat on the mat", "The cat sat.")
    assert not lexical_entails("the cat sat", "Dogs bark loudly at night")
    assert not lexical_entails("anything", "the a of")  # no content words: never entailed


def test_metrics_registered_once_in_the_one_registry():
    names = registry.group("retrieval") + registry.group("citation")
    assert names == ["retrieval_recall@5", "retrieval_mrr", "retrieval_ndcg@5", "citation_recall",
                     "citation_precision"]
    assert all(registry.get(n).kind == "check" and "rag eval" in registry.get(n).produced_by for n in names)
