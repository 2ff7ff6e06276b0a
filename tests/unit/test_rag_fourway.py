"""The four-way comparison: each system prompted as it should be, scores from the registry and citation metrics,
paired CIs from the eval pipeline, the table, the HTML report, and `tuneforge rag eval --model --tuned` end to end."""
from __future__ import annotations

import json

import pytest

from tests.rag_helpers import HashEmbedder, build_hash_index
from tuneforge.models.inference import Completion
from tuneforge.rag.fourway import comparisons_for, run_fourway, table_rows
from tuneforge.rag.fourway_report import render_fourway_report
from tuneforge.rag.retrieve import Retriever

QUESTIONS = [{"question": "Why do sea otters hold hands?", "answer": "so they do not drift apart", "line": 1},
             {"question": "How do geckos climb glass?", "answer": "called setae", "line": 2}]


class SystemEngine:
    """Base without passages: 'I do not know.'; tuned without: the reference's first word; with passages: copies the
    first passage's last sentence and cites [1] (tuned) or cites nothing (base)."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, adapters=None, **kwargs):
        self.calls.append((prompts, adapters))
        out = []
        for messages in prompts:
            user = messages[-1]["content"]
            tuned = adapters is not None and adapters[0] == "tuned"
            if user.startswith("Passages:"):
                first = user.split("\n", 3)[3].split("\n\n")[0].strip()
                text = first + (" [1]" if tuned else "")
            else:
                text = "so" if tuned else "I do not know."
            out.append(Completion(text, [], "stop", 1))
        return out


@pytest.fixture(scope="module")
def retriever(tmp_path_factory):
    return Retriever(build_hash_index(tmp_path_factory.mktemp("fourway")), HashEmbedder())


def test_four_systems_scores_and_paired_comparisons(retriever):
    engine = SystemEngine()
    results = run_fourway(retriever, engine, QUESTIONS, tuned=True, k=2, metrics=("contains_answer",),
                          n_resamples=200)
    assert results["systems"] == ["base", "tuned", "base+rag", "tuned+rag"]
    # base/tuned prompts are the bare question; RAG prompts carry the same two passages for both RAG systems.
    (base_prompts, base_adapters), (_, tuned_adapters), (rag_prompts, _), (tuned_rag_prompts, _) = engine.calls
    assert base_prompts[0] == [{"role": "user", "content": QUESTIONS[0]["question"]}] and base_adapters == [None, None]
    assert tuned_adapters == ["tuned", "tuned"] and rag_prompts == tuned_rag_prompts
    assert results["items"][0]["passages"][0]["path"].endswith("otter.md")
    summary = {s: results["models"][s]["summary"] for s in results["systems"]}
    # Passage texts contain both references ("...so they do not drift apart...", "...called setae").
    assert summary["base"]["contains_answer"] == 0.0 and summary["tuned"]["contains_answer"] == 0.0
    assert summary["base+rag"]["contains_answer"] == 1.0 and summary["tuned+rag"]["contains_answer"] == 1.0
    # Citations: tuned+rag cites [1], which holds its one sentence; base+rag cites nothing.
    assert summary["tuned+rag"]["citation_recall"] == 1.0 and summary["tuned+rag"]["citation_precision"] == 1.0
    assert summary["base+rag"]["citation_recall"] == 0.0 and "citation_recall" not in summary["base"]
    comparison = results["comparisons"]["base+rag vs base"]["contains_answer"]
    assert comparison["delta"] == 1.0 and comparison["n"] == 2
    cites = results["comparisons"]["tuned+rag vs base+rag"]["citation_recall"]
    assert cites["mean_a"] == 0.0 and cites["mean_b"] == 1.0
    header, rows = table_rows(results)
    assert header == ["metric", "base", "tuned", "base+rag", "tuned+rag"]
    assert rows[0] == ["contains_answer", "0.000", "0.000", "1.000", "1.000"]
    assert rows[1] == ["citation_recall", "-", "-", "0.000", "1.000"]
    html = render_fourway_report(results)
    assert "<svg" in html and "tuned+rag vs base+rag" in html and "I do not know." in html


def test_without_tuned_two_systems_and_unknown_metric_fails_first(retriever):
    assert comparisons_for(["base", "base+rag"]) == [("base", "base+rag")]
    engine = SystemEngine()
    results = run_fourway(retriever, engine, QUESTIONS, tuned=False, k=1, metrics=("contains_answer",),
                          n_resamples=100)
    assert results["systems"] == ["base", "base+rag"] and list(results["comparisons"]) == ["base+rag vs base"]
    with pytest.raises(Exception, match="nope"):
        run_fourway(retriever, SystemEngine(), QUESTIONS, tuned=False, metrics=("nope",))
    assert len(engine.calls) == 2


def test_rag_eval_cli_four_way_on_a_tiny_model(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tests.serve_helpers import tiny_adapter, tiny_base
    from tuneforge.cli.main import app

    monkeypatch.setattr("tuneforge.rag.embed.Embedder", HashEmbedder)
    index = build_hash_index(tmp_path)
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({**q, "gold": ["otter"]}) + "\n" for q in QUESTIONS))
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["rag", "eval", str(index), "--questions", str(questions), "-k", "2",
                                      "--model", str(tiny_base(tmp_path / "base")), "--tuned",
                                      str(tiny_adapter(tmp_path / "adapter", 1)), "--max-new-tokens", "4",
                                      "--metric", "token_f1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    document = json.loads((out / "results.json").read_text())
    assert document["systems"] == ["base", "tuned", "base+rag", "tuned+rag"] and document["n_items"] == 2
    assert set(document["comparisons"]) == {"tuned vs base", "base+rag vs base", "tuned+rag vs base",
                                            "tuned+rag vs base+rag"}
    # The adapter changes the answers: tuned and base differ on some item.
    assert any(i["tuned"]["prediction"] != i["base"]["prediction"] for i in document["items"])
    assert "tuned+rag" in result.output and (out / "report.html").read_text().startswith("<!doctype html>")


def test_citation_after_the_full_stop_belongs_to_the_sentence_before():
    from tuneforge.rag.metrics import citation_scores, split_cited_sentences

    assert split_cited_sentences("Otters hold hands. [1] Geckos climb glass. [2][3]") == [
        ("Otters hold hands.", [1]), ("Geckos climb glass.", [2, 3])]
    assert split_cited_sentences("[2] Otters hold hands.") == [("Otters hold hands.", [2])]  # nothing before
    passages = ["Sea otters hold hands while sleeping.", "Geckos climb glass with setae."]
    assert citation_scores("Sea otters hold hands while sleeping. [1]", passages)["citation_recall"] == 1.0
