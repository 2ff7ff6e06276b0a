"""Token-window chunking with overlap, using the embedding model's own tokenizer.

Chunk i covers tokens [i * (size - overlap), ... + size) of the document, so consecutive chunks share exactly
`overlap` tokens and the last one ends at the document's end; its text is the exact character span of those
tokens in the source (no detokenisation round-trip), so positions point into the original file's text.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

from tuneforge.rag.documents import Document


@dataclass(frozen=True)
class Chunk:
    source: str
    ordinal: int
    text: str
    start_char: int
    end_char: int
    start_token: int
    end_token: int
    heading: str


def token_offsets(tokenizer, text: str) -> list[tuple[int, int]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False,
                            truncation=False)
    return [tuple(pair) for pair in encoded["offset_mapping"]]


def windows(n_tokens: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) token windows covering n_tokens."""
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError(f"chunk size must be > 0 and 0 <= overlap < size (got size {size}, overlap {overlap})")
    spans, start = [], 0
    while start < n_tokens:
        end = min(start + size, n_tokens)
        spans.append((start, end))
        if end == n_tokens:
            break
        start += size - overlap
    return spans


def chunk_document(doc: Document, tokenizer, size: int = 200, overlap: int = 40) -> list[Chunk]:
    offsets = token_offsets(tokenizer, doc.text)
    chunks = []
    for ordinal, (start, end) in enumerate(windows(len(offsets), size, overlap)):
        start_char, end_char = offsets[start][0], offsets[end - 1][1]
        chunks.append(Chunk(doc.path, ordinal, doc.text[start_char:end_char], start_char, end_char, start, end,
                            doc.heading_at(start_char)))
    return chunks
