"""A fast stand-in for the embedding model in RAG tests: hashed bag of words (no model load, deterministic), with
the SmolLM2 test tokenizer for chunking. Dense retrieval with it is lexical, which tests do not rely on."""
from __future__ import annotations

import hashlib
import re

import numpy as np

from tests.tiny_models import TOKENIZER_DIR


class HashEmbedder:
    name = "hash-embedder"
    dim = 64
    max_tokens = 512

    def __init__(self, *_args, **_kwargs):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)

    def embed(self, texts, batch_size: int = 32):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)


def write_docs(folder, docs: dict[str, str]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in docs.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


ANIMALS = {
    "zebra.md": "# Zebra\nZebras are African equines with black and white stripes; each pattern is unique.\n",
    "otter.md": "# Otter\nSea otters hold hands while sleeping so they do not drift apart on the water.\n",
    "camel.md": "# Camel\nCamels store fat in their humps and can go a week without drinking water.\n",
    "gecko.md": "# Gecko\nGeckos climb glass using millions of tiny hairs on their toe pads called setae.\n",
    "owl.md": "# Owl\nOwls turn their heads up to 270 degrees because their eyes cannot move in the sockets.\n",
    "bee.md": "# Bee\nHoney bees dance in a figure eight to tell the hive where flowers are found.\n",
}


def build_hash_index(tmp_path, docs=ANIMALS):
    from tuneforge.rag.index import build_index

    index = tmp_path / "index"
    build_index([write_docs(tmp_path / "docs", docs)], index, HashEmbedder(), chunk_size=64, overlap=8)
    return index
