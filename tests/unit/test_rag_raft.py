"""RAFT-style synthesis: oracle share exact, oracle placed and cited, distractors retrieved, rejects kept with a
reason, rows in the chat format with provenance, and `tuneforge data synth` end to end on a tiny model."""
from __future__ import annotations

import json
import re

import pytest

from tests.rag_helpers import HashEmbedder, build_hash_index
from tuneforge.models.inference import Completion
from tuneforge.rag.raft import NOT_FOUND, QUESTION_SYSTEM, answer_problem, clean_question, oracle_flags, synthesize
from tuneforge.rag.retrieve import Retriever


class ScriptedEngine:
    """Asks 'What about <first word>?' and answers by citing the passage holding that word, except for the
    subjects in `miscite`, whose answers cite passage [1] whatever it holds."""

    def __init__(self, miscite=()):
        self.miscite, self.calls = set(miscite), []

    def generate(self, prompts, **kwargs):
        self.calls.append(kwargs)
        out = []
        for messages in prompts:
            if messages[0]["content"] == QUESTION_SYSTEM:
                subject = re.findall(r"[A-Za-z]+", messages[1]["content"].split("\n", 1)[1])[0]
                text = f"Question: What about {subject}?\n"
            else:
                subject = re.search(r"What about (\w+)\?", messages[1]["content"]).group(1)
                blocks = re.split(r"\n\n(?=\[\d+\] \()", messages[1]["content"].split("Passages:\n", 1)[1])
                number = next(int(b[1]) for b in blocks if subject in b)
                text = f"{subject} facts are in the passage [{1 if subject in self.miscite else number}]."
            out.append(Completion(text, [], "stop", 1))
        return out


@pytest.fixture(scope="module")
def retriever(tmp_path_factory):
    return Retriever(build_hash_index(tmp_path_factory.mktemp("raft")), HashEmbedder())


def _passage_blocks(row):
    user = row["messages"][1]["content"]
    return re.split(r"\n\n(?=\[\d+\] \()", user.split("Passages:\n", 1)[1].rsplit("\n\nQuestion:", 1)[0])


def test_oracle_share_placement_citation_and_provenance(retriever):
    from tuneforge.rag.index import index_hash

    result = synthesize(retriever, ScriptedEngine(), n=5, distractors=2, oracle_share=0.6, seed=3,
                        generator="scripted", index_path="idx", index_hash=index_hash(retriever.db))
    assert len(result.rows) == 5 and result.rejects == []
    assert (result.oracle_rows, result.no_oracle_rows) == (3, 2)  # floor(5 * 0.6 + 0.5) = 3
    ids = {int(i) for i in retriever.ids}
    for row in result.rows:
        meta, blocks = row["meta"], _passage_blocks(row)
        oracle = meta["oracle_chunk"]["id"]
        assert meta["index_hash"] == index_hash(retriever.db) and meta["generator"] == "scripted"
        assert oracle not in meta["distractor_chunks"] and set(meta["distractor_chunks"]) <= ids
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        answer = row["messages"][2]["content"]
        oracle_text = retriever.passages([(oracle, 0.0)])[0].text
        if meta["oracle_included"]:
            assert len(blocks) == 3
            position = meta["oracle_position"]
            assert blocks[position - 1].endswith(oracle_text)  # "[n] (key: heading)\n<oracle text>"
            assert f"[{position}]" in answer
        else:
            assert len(blocks) == 2 and meta["oracle_position"] is None
            assert all(not b.endswith(oracle_text) for b in blocks)
            assert answer == NOT_FOUND


def test_miscited_answers_go_to_rejects_with_the_reason(retriever):
    # Sampled with seed 3: the subjects come from the chunks; miscite every one so oracle rows fail unless the
    # oracle happens to sit at position 1.
    subjects = ["Zebras", "Sea", "Camels", "Geckos", "Owls", "Honey"]
    result = synthesize(retriever, ScriptedEngine(miscite=subjects), n=6, distractors=2, oracle_share=1.0, seed=1)
    assert len(result.rows) + len(result.rejects) == 6
    for row in result.rows:
        assert row["meta"]["oracle_position"] == 1
    for reject in result.rejects:
        position = reject["meta"]["oracle_position"]
        assert position != 1 and reject["reason"] == f"does not cite the oracle passage [{position}]"
    assert result.reasons == ({"does not cite the oracle passage [N]": len(result.rejects)} if result.rejects else {})
    assert result.rejects, "seed 1 places some oracle away from position 1"


def test_small_pieces():
    from tuneforge.rag.raft import overlaps
    from tuneforge.rag.retrieve import Passage

    def chunk(cid, path, start, end):
        return Passage(cid, path, "", start, end, 0, 0, "", 0.0)

    oracle = chunk(5, "a.md", 100, 200)
    assert overlaps(chunk(5, "a.md", 100, 200), oracle) and overlaps(chunk(6, "a.md", 180, 280), oracle)
    assert not overlaps(chunk(7, "a.md", 200, 300), oracle) and not overlaps(chunk(8, "b.md", 100, 200), oracle)
    assert clean_question('\n  Question: "Why do owls turn heads?"\nmore') == "Why do owls turn heads?"
    assert clean_question("  \n ") == ""
    flags = oracle_flags(10, 0.25, __import__("random").Random(0))
    assert len(flags) == 10 and sum(flags) == 3  # 2.5 rounds half up
    assert answer_problem("see [2] and [5]", 2, 4) == "cites [5], not among the 4 passages"
    assert answer_problem("see [3]", 2, 4) == "does not cite the oracle passage [2]"
    assert answer_problem("see [2][3]", 2, 4) is None
    assert answer_problem(" ", None, 4) == "empty answer"
    with pytest.raises(Exception, match="between 0 and 1"):
        oracle_flags(3, 1.5, __import__("random").Random(0))


def test_too_many_rows_for_the_index_is_a_clear_error(retriever):
    from tuneforge.errors import DataError

    with pytest.raises(DataError, match="6 searchable chunks; --n 7"):
        synthesize(retriever, ScriptedEngine(), n=7)


def test_data_synth_cli_on_a_tiny_model(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tests.serve_helpers import tiny_base
    from tuneforge.cli.main import app
    from tuneforge.data.formats import load_dataset_file

    monkeypatch.setattr("tuneforge.rag.embed.Embedder", HashEmbedder)
    index = build_hash_index(tmp_path)
    out = tmp_path / "raft.jsonl"
    result = CliRunner().invoke(app, ["data", "synth", "--from-index", str(index), "--model",
                                      str(tiny_base(tmp_path / "tiny")), "--n", "4", "--oracle-share", "0.5",
                                      "--question-tokens", "6", "--answer-tokens", "6",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    rejects = [json.loads(line) for line in (tmp_path / "raft.jsonl.rejected.jsonl").read_text().splitlines()]
    assert len(rows) + len(rejects) == 4  # nothing dropped silently
    assert all(r["reason"] for r in rejects)
    assert f"{len(rejects)} rejected" in result.output
    if rows:
        loaded = load_dataset_file(str(out), "auto")
        assert loaded.format == "chat" and len(loaded.rows) == len(rows)
        assert all(r["meta"]["oracle_chunk"]["path"].endswith(".md") for r in loaded.rows)


def test_extractive_writer_quotes_and_cites_the_oracle_without_a_model(retriever):
    from tuneforge.rag.raft import quotable_sentences

    result = synthesize(retriever, None, n=6, distractors=2, oracle_share=0.5, seed=1, writer="extractive",
                        generator="extractive")
    assert (result.oracle_rows, result.no_oracle_rows) == (3, 3) and result.rejects == []
    for row in result.rows:
        meta, answer = row["meta"], row["messages"][-1]["content"]
        assert meta["writer"] == "extractive" and meta["question_prompt"] == "extractive"
        question = row["messages"][1]["content"].rsplit("Question:", 1)[1]
        if not meta["oracle_included"]:
            assert answer == NOT_FOUND
            continue
        quote = re.fullmatch(r'The reference says: "(.+)" \[(\d)\]', answer)
        assert quote and int(quote.group(2)) == meta["oracle_position"]
        oracle_block = _passage_blocks(row)[meta["oracle_position"] - 1]
        # The quoted sentence is one of the oracle's own sentences, and the question names its opening words.
        assert quote.group(1) in quotable_sentences(oracle_block.split("\n", 1)[1])
        assert " ".join(quote.group(1).split()[:3]) in question


def test_quotable_sentences_skip_code_grammar_and_fragments():
    from tuneforge.rag.raft import quotable_sentences

    text = ("Zebras are African equines with black and white stripes; each pattern is unique. Short one.\n"
            "stmt ::= \"for\" target_list \"in\" expression_list \":\" suite. x = 1.\n"
            "The herd moves together across the open plains   when the rains\n come back each year.")
    assert quotable_sentences(text) == [
        "Zebras are African equines with black and white stripes; each pattern is unique.",
        "The herd moves together across the open plains when the rains come back each year."]


def test_synth_cli_model_writer_needs_a_model(tmp_path):
    from typer.testing import CliRunner

    from tuneforge.cli.main import app

    result = CliRunner().invoke(app, ["data", "synth", "--from-index", str(tmp_path), "--n", "3",
                                      "--out", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2 and "--writer model needs --model" in result.output
