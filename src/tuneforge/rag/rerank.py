"""Optional cross-encoder reranking: retrieve N candidates (hybrid, dense or BM25), score each (query, passage)
pair jointly with a cross-encoder, keep the k best.

The model is a sentence-transformers CrossEncoder: a local folder (a CrossEncoder or a transformers
sequence-classification model with one label) or a hub id. No cross-encoder ships without the hub (the model
catalog has none), so offline a hub id is an error that says to pass a local folder.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from tuneforge.errors import ModelSourceError

DEFAULT_CANDIDATES = 20
BATCH_SIZE = 32
_NEEDS_FOLDER = "pass a local cross-encoder folder (a sentence-transformers CrossEncoder, or a transformers " \
                "sequence-classification model with num_labels=1); hub ids need a reachable hub"


def _looks_like_path(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or "\\" in ref or ref.count("/") > 1


def resolve_reranker_model(ref: str) -> tuple[str, bool]:
    """(what CrossEncoder() loads, whether it is a local folder); a missing or non-model folder is an error."""
    path = Path(ref).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelSourceError(f"reranker {ref!r}: not a cross-encoder model folder (no config.json)",
                                   hint=_NEEDS_FOLDER)
        return str(path), True
    if _looks_like_path(ref):
        raise ModelSourceError(f"reranker {ref!r}: no such folder", hint=_NEEDS_FOLDER)
    return ref, False  # a hub id: sentence-transformers resolves it (needs a reachable hub)


class Reranker:
    """A cross-encoder that reorders retrieved passages by its (query, passage text) score."""

    def __init__(self, ref: str, batch_size: int = BATCH_SIZE):
        from sentence_transformers import CrossEncoder

        self.name = ref
        self.batch_size = batch_size
        source, local = resolve_reranker_model(ref)
        try:
            self.model = CrossEncoder(source, device="cpu", local_files_only=local)
        except Exception as error:  # noqa: BLE001 - hub, network and format errors all mean "cannot load this"
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            where = "the folder" if local else "the hub id (offline, or not a cross-encoder there)"
            raise ModelSourceError(f"reranker {ref!r} could not be loaded from {where}: {first}",
                                   hint=_NEEDS_FOLDER) from None
        if self.model.num_labels != 1:
            raise ModelSourceError(f"reranker {ref!r} has {self.model.num_labels} output labels: a reranker gives "
                                   "one relevance score per (query, passage) pair", hint=_NEEDS_FOLDER)
        self.calls = 0
        self.pairs_scored = 0

    def scores(self, query: str, texts: list[str]) -> list[float]:
        """The cross-encoder's score of each (query, text) pair, in the order given (batches of batch_size)."""
        self.calls += 1
        self.pairs_scored += len(texts)
        if not texts:
            return []
        predicted = self.model.predict([(query, text) for text in texts], batch_size=self.batch_size,
                                       show_progress_bar=False, convert_to_numpy=True)
        return [float(s) for s in predicted.reshape(len(texts))]

    def rerank(self, query: str, passages: list, top_k: int | None = None) -> list:
        """The passages sorted by score, highest first (ties keep their retrieval order), each carrying its score
        in `rerank_score` (`score` stays the retrieval score); the first top_k when given."""
        scores = self.scores(query, [p.text for p in passages])
        order = sorted(range(len(passages)), key=lambda i: -scores[i])  # sorted() is stable
        ranked = [dataclasses.replace(passages[i], rerank_score=scores[i]) for i in order]
        return ranked if top_k is None else ranked[:top_k]
