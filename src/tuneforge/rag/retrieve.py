"""Dense (exact cosine), BM25 and hybrid (reciprocal rank fusion, k = 60) retrieval over an index folder; with a
reranker (rag/rerank.py), the top `rerank_candidates` of the chosen mode reordered by a cross-encoder."""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuneforge.errors import DataError
from tuneforge.rag.index import BM25_DIR, DB_NAME, bm25_tokens, connect, read_meta

RRF_K = 60
MODES = ("hybrid", "dense", "bm25")
HALF_SCAN_MIN_ROWS = 20_000  # below this the float32 scan is a few ms: keep it exact and simple
SHORTLIST = 200  # float16 candidates rescored in float32
QUERY_CACHE = 256


@dataclass(frozen=True)
class Passage:
    id: int
    source: str
    heading: str
    start_char: int
    end_char: int
    start_token: int
    end_token: int
    text: str
    score: float  # the retrieval score (RRF-style 1 / (60 + rank) per list)
    rerank_score: float | None = None  # the cross-encoder's score, when reranked (the order is then by it)

    @property
    def key(self) -> str:
        """The gold-passage key: the source file's stem (a section of the demo corpus)."""
        return Path(self.source).stem

    def where(self) -> str:
        heading = f" \u00a7 {self.heading}" if self.heading else ""
        return f"{self.source}{heading} (chars {self.start_char}-{self.end_char})"


def rrf(rankings: list[list[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: score(d) = sum over rankings of 1 / (k + rank), ranks from 1; ties by first seen."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])


_POOL = None


def _pool():
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tuneforge-bm25")
    return _POOL


class Retriever:
    def __init__(self, index_dir: Path, embedder=None, reranker=None, rerank_candidates: int | None = None):
        index_dir = Path(index_dir)
        if not (index_dir / DB_NAME).is_file():
            raise DataError(f"{index_dir}: not a tuneforge RAG index (no {DB_NAME})",
                            hint="build one with `tuneforge rag index DOCS... --out INDEX`")
        self.db = connect(index_dir)
        self.meta = read_meta(self.db)
        if embedder is None:
            from tuneforge.rag.embed import Embedder

            embedder = Embedder(self.meta["model"])
        self.embedder = embedder
        rows = self.db.execute("SELECT id, vector FROM chunks WHERE duplicate_of IS NULL ORDER BY id").fetchall()
        self.ids = np.array([cid for cid, _ in rows], dtype=np.int64)
        dim = int(self.meta.get("dim", 0))
        self.vectors = (np.frombuffer(b"".join(v for _, v in rows), dtype=np.float32).reshape(len(rows), dim)
                        if rows else np.zeros((0, dim), dtype=np.float32))
        import bm25s

        bm25_dir = index_dir / BM25_DIR
        self.bm25_ids = json.loads((bm25_dir / "ids.json").read_text(encoding="utf-8"))
        self.bm25 = bm25s.BM25.load(str(bm25_dir), show_progress=False) if self.bm25_ids else None

        self._setup_scan()
        self.set_reranker(reranker, rerank_candidates)

    def set_reranker(self, reranker=None, candidates: int | None = None) -> None:
        """Rerank every search (unless asked not to) with `reranker` (a rag.rerank.Reranker, or None for none):
        the top `candidates` (default 20, at least k) of the mode's ranking, reordered, cut to k."""
        from tuneforge.rag.rerank import DEFAULT_CANDIDATES

        if candidates is not None and candidates < 1:
            raise DataError(f"rerank candidates {candidates}: expected a positive number")
        self.reranker = reranker
        self.rerank_candidates = candidates or DEFAULT_CANDIDATES

    @classmethod
    def from_arrays(cls, ids, vectors, bm25, bm25_ids, embedder, db) -> Retriever:
        """An in-memory retriever (benchmarks: 100k synthetic chunks without an on-disk build)."""
        self = cls.__new__(cls)
        self.ids, self.vectors, self.bm25, self.bm25_ids, self.embedder, self.db = ids, vectors, bm25, bm25_ids, \
            embedder, db
        self.meta = {}
        self._setup_scan()
        self.set_reranker(None)
        return self

    def _setup_scan(self) -> None:
        # The exact scan reads every vector per query, so at scale its cost is memory traffic: a float16 copy halves
        # it (bench/bench_rag.py: ~29 -> ~16 ms CPU per query at 100k x 384 on the loaded dev machine), and the
        # shortlist it yields is rescored in float32, so the order returned is the exact cosine order. float16
        # rounding (~1e-3) could only matter for a passage near the shortlist's edge (rank ~SHORTLIST).
        self._half = None
        if len(self.ids) >= HALF_SCAN_MIN_ROWS:
            import torch

            self._half = torch.from_numpy(self.vectors.astype(np.float16))  # a writable copy, half the size
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def query_vector(self, query: str) -> np.ndarray:
        """The query's embedding; recent ones are kept (evaluation asks the same question in several modes)."""
        vector = self._query_cache.get(query)
        if vector is None:
            vector = self.embedder.embed([query])[0]
            self._query_cache[query] = vector
            if len(self._query_cache) > QUERY_CACHE:
                self._query_cache.popitem(last=False)
        else:
            self._query_cache.move_to_end(query)
        return vector

    def dense(self, query: str, n: int, vector: np.ndarray | None = None) -> list[int]:
        if not len(self.ids):
            return []
        q = self.query_vector(query) if vector is None else vector
        n = min(n, len(self.ids))
        if self._half is not None and len(self.ids) > 4 * max(n, SHORTLIST):
            import torch

            rough = (self._half @ torch.from_numpy(np.asarray(q, dtype=np.float32)).to(torch.float16)).float().numpy()
            rows = np.argpartition(-rough, max(n, SHORTLIST) - 1)[:max(n, SHORTLIST)]
        else:
            rows = np.arange(len(self.ids))
        scores = self.vectors[rows] @ q if len(rows) < len(self.ids) else self.vectors @ q
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [int(self.ids[rows[i]]) for i in top]

    def lexical(self, query: str, n: int) -> list[int]:
        if self.bm25 is None:
            return []
        tokens = bm25_tokens([query])
        if not tokens[0]:
            return []
        n = min(n, len(self.bm25_ids))
        docs, scores = self.bm25.retrieve(tokens, k=n, show_progress=False, n_threads=0)
        return [self.bm25_ids[int(d)] for d, s in zip(docs[0], scores[0]) if s > 0]

    def ranked_ids(self, query: str, k: int = 5, mode: str = "hybrid",
                   depth: int | None = None) -> list[tuple[int, float]]:
        if mode not in MODES:
            raise DataError(f"retrieval mode {mode!r}: expected one of {', '.join(MODES)}")
        depth = depth or max(50, 4 * k)  # fuse deeper lists than k so a passage second in both still surfaces
        if mode == "dense":
            return [(cid, 1.0 / (RRF_K + r)) for r, cid in enumerate(self.dense(query, k), 1)]
        if mode == "bm25":
            return [(cid, 1.0 / (RRF_K + r)) for r, cid in enumerate(self.lexical(query, k), 1)]
        # BM25 runs in a second thread while the query is embedded (torch and numpy release the GIL), so the
        # hybrid costs max(embed + scan, BM25) rather than the sum.
        lexical = _pool().submit(self.lexical, query, depth)
        return rrf([self.dense(query, depth), lexical.result()])[:k]

    def search(self, query: str, k: int = 5, mode: str = "hybrid", rerank: bool | None = None) -> list[Passage]:
        """The k best passages of `mode`; reranked when the retriever has a reranker (rerank=None) or rerank=True
        (which then needs one), not when rerank=False."""
        if rerank is None:
            rerank = self.reranker is not None
        if not rerank:
            return self.passages(self.ranked_ids(query, k, mode))
        if self.reranker is None:
            raise DataError("reranking asked for, but this retriever has no reranker")
        candidates = self.passages(self.ranked_ids(query, max(k, self.rerank_candidates), mode))
        return self.reranker.rerank(query, candidates, k)

    def passages(self, ranked: list[tuple[int, float]]) -> list[Passage]:
        if not ranked:
            return []
        marks = ",".join("?" * len(ranked))
        rows = {r[0]: r for r in self.db.execute(
            f"SELECT id, path, heading, start_char, end_char, start_token, end_token, text FROM chunks "
            f"WHERE id IN ({marks})", [cid for cid, _ in ranked])}
        return [Passage(*rows[cid][:7], rows[cid][7], score) for cid, score in ranked if cid in rows]
