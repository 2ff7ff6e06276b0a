"""Answering with retrieved passages: the prompt numbers the passages, citations map back to source + position."""
from __future__ import annotations

from tuneforge.models.inference import Completion
from tuneforge.rag.answer import answer_questions, cited_numbers, rag_messages
from tuneforge.rag.retrieve import Passage


def _passage(i, source, text):
    return Passage(i, source, f"H{i}", 10 * i, 10 * i + len(text), i, i + 5, text, 0.1)


class FakeEngine:
    def __init__(self, text):
        self.text, self.prompts = text, None

    def generate(self, prompts, **kwargs):
        self.prompts = prompts
        return [Completion(self.text, [], "stop", 0) for _ in prompts]


def test_answer_cites_passages_by_number_and_maps_them_to_sources():
    passages = [_passage(1, "/d/cats.md", "Cats purr."), _passage(2, "/d/stars.md", "Stars fuse hydrogen.")]
    engine = FakeEngine("Stars fuse hydrogen [2]. Also [2] and [7].")
    result = answer_questions(engine, ["What do stars fuse?"], [passages])[0]
    user = engine.prompts[0][-1]["content"]
    assert "[1] (cats: H1)\nCats purr." in user and "[2] (stars: H2)\nStars fuse hydrogen." in user
    assert user.endswith("Question: What do stars fuse?")
    assert result.cited == [2, 7]
    assert [(n, p.source) for n, p in result.sources()] == [(2, "/d/stars.md")]  # [7] names no passage
    assert result.sources()[0][1].where() == "/d/stars.md \u00a7 H2 (chars 20-40)"


def test_prompt_and_citation_parsing():
    assert cited_numbers("a [3] b [1][3] c") == [3, 1]
    assert rag_messages("q", [])[-1]["content"].startswith("Passages:")


def test_evaluate_citations_scores_the_engine_answers():
    from tuneforge.rag.evaluate import evaluate_citations

    class OneRetriever:
        def search(self, question, k, mode):
            return [_passage(1, "/d/stars.md", "Stars fuse hydrogen into helium."), _passage(2, "/d/x.md", "Other.")]

    engine = FakeEngine("Stars fuse hydrogen into helium [1][2]. They are hot.")
    scores = evaluate_citations(OneRetriever(), engine, [{"question": "q", "answer": "hydrogen into helium"}], k=2)
    # sentence 1 supported ([1] precise, [2] not needed); sentence 2 uncited
    assert scores["citation_recall"] == 0.5 and scores["citation_precision"] == 0.5
    assert scores["answers_citing"] == 1.0 and scores["answer_overlap"] == 1.0
