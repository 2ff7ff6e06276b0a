"""Chunking windows and positions, and the document readers (no embedding model needed)."""
from __future__ import annotations

import re

import pytest

from tuneforge.errors import DataError
from tuneforge.rag.chunk import chunk_document, windows
from tuneforge.rag.documents import Document, collect_files, read_document


class WordTokenizer:
    """One token per whitespace-separated word, with exact character offsets (like a fast HF tokenizer)."""

    def __call__(self, text, **_):
        return {"offset_mapping": [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]}


def test_windows_overlap_exactly_and_end_at_the_end():
    assert windows(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
    assert windows(11, 4, 1) == [(0, 4), (3, 7), (6, 10), (9, 11)]
    assert windows(3, 4, 1) == [(0, 3)]
    assert windows(0, 4, 1) == []
    assert windows(8, 4, 0) == [(0, 4), (4, 8)]
    with pytest.raises(ValueError, match="overlap"):
        windows(10, 4, 4)


def test_chunks_are_exact_source_spans_with_shared_tokens_and_headings():
    text = "# Intro\n" + " ".join(f"w{i}" for i in range(12)) + "\n# Second\n" + " ".join(f"v{i}" for i in range(6))
    doc = Document("doc.md", text, [(0, "Intro"), (text.index("# Second"), "Second")])
    chunks = chunk_document(doc, WordTokenizer(), size=8, overlap=3)
    words = text.split()
    assert [(c.start_token, c.end_token) for c in chunks] == [(0, 8), (5, 13), (10, 18), (15, 22)]
    for c in chunks:
        assert text[c.start_char:c.end_char] == c.text
        assert c.text.split() == words[c.start_token:c.end_token]
    for a, b in zip(chunks, chunks[1:]):
        assert a.text.split()[-3:] == b.text.split()[:3]  # exactly `overlap` tokens shared
    assert [c.heading for c in chunks] == ["Intro", "Intro", "Intro", "Second"]


def test_real_tokenizer_offsets(tmp_path):
    from transformers import AutoTokenizer

    from tests.tiny_models import TOKENIZER_DIR

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    text = "Retrieval augmented generation cites its sources. " * 20
    chunks = chunk_document(Document("a.txt", text), tokenizer, size=16, overlap=4)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert chunks[-1].end_token == len(ids)
    for a, b in zip(chunks, chunks[1:]):
        assert b.start_token == a.end_token - 4
        assert text[b.start_char:a.end_char] == tokenizer.decode(ids[b.start_token:a.end_token])


def test_readers_find_headings_in_markdown_html_and_rst(tmp_path):
    (tmp_path / "a.md").write_text("intro\n# Title\nbody\n## Sub\nmore\n", encoding="utf-8")
    (tmp_path / "b.html").write_text("<html><script>x=1</script><h1>Top</h1><p>alpha</p><h2>Low</h2><p>beta</p>"
                                     "</html>", encoding="utf-8")
    (tmp_path / "c.txt").write_text("The if statement\n****************\n\nbody\n", encoding="utf-8")
    md = read_document(tmp_path / "a.md")
    assert [h for _, h in md.headings] == ["Title", "Sub"]
    assert md.heading_at(md.text.index("more")) == "Sub" and md.heading_at(0) == ""
    html = read_document(tmp_path / "b.html")
    assert "x=1" not in html.text and "alpha" in html.text
    assert html.heading_at(html.text.index("beta")) == "Low"
    assert html.text[html.headings[0][0]:].startswith("Top")
    assert read_document(tmp_path / "c.txt").headings == [(0, "The if statement")]


def test_pdf_reader(tmp_path):
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(72, 72)
    with open(tmp_path / "blank.pdf", "wb") as handle:
        writer.write(handle)
    doc = read_document(tmp_path / "blank.pdf")
    assert doc.headings == [(0, "page 1")]
    (tmp_path / "bad.pdf").write_bytes(b"not a pdf")
    with pytest.raises(DataError, match="bad.pdf: unreadable PDF"):
        read_document(tmp_path / "bad.pdf")


def test_collect_files_errors_name_the_path(tmp_path):
    (tmp_path / "x.csv").write_text("a", encoding="utf-8")
    with pytest.raises(DataError, match=r"x\.csv: unsupported document type"):
        collect_files([tmp_path / "x.csv"])
    with pytest.raises(DataError, match="no such file"):
        collect_files([tmp_path / "missing"])
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "k.md").write_text("k", encoding="utf-8")
    assert collect_files([tmp_path]) == [(tmp_path / "d" / "k.md").resolve()]
