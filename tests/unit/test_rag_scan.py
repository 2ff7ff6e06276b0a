"""The dense scan at scale: the float16 shortlist rescored in float32 returns exactly the float32 cosine order;
a query is embedded once however many modes ask for it; hybrid fuses dense and BM25 run side by side."""
from __future__ import annotations

import numpy as np

from tuneforge.rag.retrieve import HALF_SCAN_MIN_ROWS, Retriever


class CountingEmbedder:
    def __init__(self, vector):
        self.vector, self.calls = vector, 0

    def embed(self, texts):
        self.calls += 1
        return np.stack([self.vector] * len(texts))


def _unit(rows):
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def test_half_precision_shortlist_returns_the_exact_order():
    rng = np.random.default_rng(0)
    n = HALF_SCAN_MIN_ROWS + 5000
    vectors = _unit(rng.standard_normal((n, 32)))
    query = _unit(rng.standard_normal(32))
    # Near-ties float16 cannot separate (score gaps ~1e-5): the float32 rescoring must still order them.
    for step, row in enumerate((11, 22, 33)):
        vectors[row] = _unit(query + 0.01 * vectors[0] + 1e-4 * step * vectors[1])
    ids = np.arange(n) * 10  # ids differ from row numbers: the mapping back must use the shortlist rows
    retriever = Retriever.from_arrays(ids, vectors, None, [], CountingEmbedder(query), None)
    assert retriever._half is not None
    exact = np.argsort(-(vectors @ query), kind="stable")[:50]
    assert retriever.dense("q", 50) == [int(ids[i]) for i in exact]
    assert retriever.dense("q", 3) == [int(ids[i]) for i in exact[:3]]


def test_small_index_scans_in_float32_and_the_query_is_embedded_once():
    rng = np.random.default_rng(1)
    vectors = _unit(rng.standard_normal((50, 8)))
    embedder = CountingEmbedder(vectors[7])
    retriever = Retriever.from_arrays(np.arange(50), vectors, None, [], embedder, None)
    assert retriever._half is None
    assert retriever.dense("q", 1) == [7]
    assert retriever.ranked_ids("q", 2, "hybrid")[0][0] == 7  # no BM25 index: the dense side alone
    assert embedder.calls == 1
    retriever.dense("another", 1)
    assert embedder.calls == 2
