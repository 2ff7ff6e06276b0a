"""RAG benchmark: index build time, query latency at 100k chunks, recall@5 of hybrid vs dense vs BM25.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_rag.py [--chunks 100000] [--queries 100] [--out FILE.json]

1. Builds an index of the bundled demo corpus (pydoc_data.topics, 79 sections) with all-MiniLM-L6-v2 from the
   catalog: seconds per 1,000 chunks (chunk + dedup + embed + SQLite + BM25), model load excluded.
2. Latency at scale: `--chunks` synthetic chunks (random unit 384-d vectors; texts of 60 words drawn from the
   corpus vocabulary for BM25), stored in SQLite as float32 blobs and loaded back like a real index. Each of
   `--queries` queries is timed end to end: query embedding + exact cosine scan (float16 shortlist rescored in
   float32) + BM25 (in a second thread, beside the embedding) + RRF (k=60). p50/p95. Goal: p95 < 50 ms on 2 cores.
   The query embedding (all-MiniLM-L6-v2 forward, ~40-50 ms CPU on the loaded dev machine) is most of it.
3. recall@5 / MRR / nDCG@5 of each mode on the demo question set.
Prints the load average: the machine may be shared, which inflates the timings.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tuneforge.rag.demo import demo_questions_path, load_questions, write_demo_corpus  # noqa: E402
from tuneforge.rag.embed import Embedder  # noqa: E402
from tuneforge.rag.evaluate import evaluate_retrieval  # noqa: E402
from tuneforge.rag.index import bm25_tokens, build_index  # noqa: E402
from tuneforge.rag.retrieve import Retriever  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-demo", action="store_true", help="skip the demo build + eval (scale part only)")
    args = parser.parse_args()
    result: dict = {"load_average_start": os.getloadavg()}
    start = time.perf_counter()
    embedder = Embedder()
    result["model_load_s"] = round(time.perf_counter() - start, 2)
    questions = load_questions(demo_questions_path())

    with tempfile.TemporaryDirectory() as tmp:
        corpus, index = Path(tmp) / "corpus", Path(tmp) / "index"
        write_demo_corpus(corpus)
        start = time.perf_counter()
        if args.no_demo:  # a 3-file index is enough for the scale part's vocabulary
            for extra in sorted(corpus.iterdir())[3:]:
                extra.unlink()
        report = build_index([corpus], index, embedder)
        build_s = time.perf_counter() - start
        result["demo_index"] = {"chunks": report.chunks, "embedded": report.embedded,
                                "near_duplicates": report.duplicates, "build_s": round(build_s, 1),
                                "s_per_1000_chunks": round(build_s / report.chunks * 1000, 1)}
        start = time.perf_counter()
        retriever = Retriever(index, embedder)
        scores = {} if args.no_demo else evaluate_retrieval(retriever, questions, k=5)
        result["demo_retrieval"] = {mode: {m: round(v[m], 3) for m in ("recall", "mrr", "ndcg")}
                                    for mode, v in scores.items()}
        result["demo_eval_s"] = round(time.perf_counter() - start, 1)
        vocabulary = sorted({w for (text,) in retriever.db.execute("SELECT text FROM chunks") for w in text.split()})

        # ---- latency at scale
        rng = np.random.default_rng(0)
        n = args.chunks
        vectors = rng.standard_normal((n, embedder.dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        db_path = Path(tmp) / "scale.sqlite"
        db = sqlite3.connect(str(db_path))
        db.execute("CREATE TABLE chunks (id INTEGER PRIMARY KEY, vector BLOB)")
        with db:
            db.executemany("INSERT INTO chunks VALUES (?, ?)", ((i, vectors[i].tobytes()) for i in range(n)))
        start = time.perf_counter()
        rows = db.execute("SELECT id, vector FROM chunks ORDER BY id").fetchall()
        loaded = np.frombuffer(b"".join(v for _, v in rows), dtype=np.float32).reshape(n, embedder.dim)
        result["scale_sqlite_load_s"] = round(time.perf_counter() - start, 2)
        result["scale_sqlite_mb"] = round(db_path.stat().st_size / 2**20, 1)
        words = np.array(vocabulary)  # converted once: rng.choice on a list re-converts it on every call
        texts = [" ".join(row) for row in words[rng.integers(0, len(words), (n, 60))]]
        import bm25s

        start = time.perf_counter()
        bm25 = bm25s.BM25()
        bm25.index(bm25_tokens(texts), show_progress=False)
        result["scale_bm25_index_s"] = round(time.perf_counter() - start, 1)
        scale = Retriever.from_arrays(np.arange(n), loaded, bm25, list(range(n)), embedder, db)
        latencies = {"hybrid": [], "dense": [], "embed_only": []}
        for i in range(args.queries):
            question = questions[i % len(questions)]["question"] + ("" if i < len(questions) else f" ({i})")
            scale._query_cache.clear()  # every timing includes the query embedding (no cache hit)
            t0 = time.perf_counter()
            scale.ranked_ids(question, 5, "hybrid")
            t1 = time.perf_counter()
            scale._query_cache.clear()
            scale.ranked_ids(question, 5, "dense")
            t2 = time.perf_counter()
            embedder.embed([question])
            t3 = time.perf_counter()
            latencies["hybrid"].append(t1 - t0)
            latencies["dense"].append(t2 - t1)
            latencies["embed_only"].append(t3 - t2)
        result["scale_latency_ms"] = {
            mode: {q: round(float(np.percentile(v, p)) * 1000, 1) for q, p in (("p50", 50), ("p95", 95))}
            for mode, v in latencies.items()}
        result["scale_chunks"] = n
    result["load_average_end"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
