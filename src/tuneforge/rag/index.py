"""The on-disk index: one folder holding index.sqlite (files, chunks, float32 vectors) and bm25/ (a bm25s index).

Why SQLite + numpy brute force rather than sqlite-vec or LanceDB: SQLite is in the standard library (no native
extension to load, which some Python builds forbid), one file holds text, positions, file hashes and vectors in
one transaction, and an exact cosine scan of 100k x 384 float32 vectors is one matrix-vector product (measured in
bench/bench_rag.py, a few ms) - well under the 50 ms goal, with exact rather than approximate recall. An ANN store
pays off only at millions of chunks.

Updating: files whose sha256 is unchanged are skipped; a changed file's chunks are replaced, a file no longer among
the inputs is removed, each in the same SQLite transaction. Near-duplicate chunks (tuneforge.data.dedup) are kept
in the table but marked `duplicate_of` and never embedded nor searched; duplicates are recomputed over the whole
index on every update, so removing the file that held the kept copy brings the other copy back (embedded then).
The BM25 index is rebuilt from the table on every update (seconds for 100k chunks) and swapped in atomically.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from tuneforge.atomic import atomic_dir
from tuneforge.errors import DataError
from tuneforge.hashing import sha256_file
from tuneforge.rag.chunk import chunk_document
from tuneforge.rag.documents import collect_files, read_document

SCHEMA_VERSION = 1
DB_NAME = "index.sqlite"
BM25_DIR = "bm25"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, sha256 TEXT NOT NULL, chunks INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL, ordinal INTEGER NOT NULL, text TEXT NOT NULL,
    start_char INTEGER NOT NULL, end_char INTEGER NOT NULL, start_token INTEGER NOT NULL, end_token INTEGER NOT NULL,
    heading TEXT NOT NULL, duplicate_of INTEGER, vector BLOB);
CREATE INDEX IF NOT EXISTS chunks_path ON chunks(path);
"""


@dataclass
class UpdateReport:
    added: list[str]
    changed: list[str]
    removed: list[str]
    unchanged: int
    chunks: int
    duplicates: int
    embedded: int


def connect(index_dir: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(Path(index_dir) / DB_NAME))
    db.executescript(SCHEMA)
    return db


def read_meta(db: sqlite3.Connection) -> dict:
    return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}


def build_index(inputs: list, index_dir: Path, embedder, *, chunk_size: int = 200, overlap: int = 40,
                dedup_threshold: float = 0.9) -> UpdateReport:
    """Create or update the index at `index_dir` so that it mirrors the documents in `inputs`."""
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    if chunk_size > embedder.max_tokens:
        raise DataError(f"chunk size {chunk_size} exceeds the embedding model's {embedder.max_tokens} tokens",
                        hint=f"use --chunk-size {embedder.max_tokens} or less")
    files = collect_files(inputs)
    if not files:
        raise DataError(f"no documents found in {', '.join(map(str, inputs))}")
    db = connect(index_dir)
    try:
        meta = read_meta(db)
        wanted = {"model": embedder.name, "dim": embedder.dim, "chunk_size": chunk_size, "overlap": overlap,
                  "dedup_threshold": dedup_threshold, "schema": SCHEMA_VERSION}
        if meta and any(meta.get(k) != v for k, v in wanted.items()):
            # Vectors or chunks made with other settings cannot be mixed with new ones: start over.
            db.executescript("DELETE FROM files; DELETE FROM chunks; DELETE FROM meta;")
        known = dict(db.execute("SELECT path, sha256 FROM files"))
        current = {str(p): sha256_file(p) for p in files}
        removed = sorted(set(known) - set(current))
        added = sorted(p for p in current if p not in known)
        changed = sorted(p for p in current if p in known and known[p] != current[p])
        with db:  # one transaction: a crash leaves the previous index whole
            for key, value in wanted.items():
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))
            for path in removed + changed:
                db.execute("DELETE FROM chunks WHERE path = ?", (path,))
                db.execute("DELETE FROM files WHERE path = ?", (path,))
            for path in added + changed:
                chunks = chunk_document(read_document(Path(path)), embedder.tokenizer, chunk_size, overlap)
                db.executemany(
                    "INSERT INTO chunks (path, ordinal, text, start_char, end_char, start_token, end_token, heading)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(c.source, c.ordinal, c.text, c.start_char, c.end_char, c.start_token, c.end_token, c.heading)
                     for c in chunks])
                db.execute("INSERT INTO files VALUES (?, ?, ?)", (path, current[path], len(chunks)))
            duplicates = _mark_duplicates(db, dedup_threshold)
            embedded = _embed_missing(db, embedder)
        total = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        _write_bm25(db, index_dir)
    finally:
        db.close()
    return UpdateReport(added, changed, removed, len(current) - len(added) - len(changed), total, duplicates, embedded)


def _mark_duplicates(db: sqlite3.Connection, threshold: float) -> int:
    from tuneforge.data.dedup import near_duplicates

    rows = db.execute("SELECT id, text FROM chunks ORDER BY path, ordinal").fetchall()
    db.execute("UPDATE chunks SET duplicate_of = NULL")
    if len(rows) < 2:
        return 0
    clusters = near_duplicates([{"text": text} for _, text in rows], threshold=threshold)
    marks = [(rows[c.representative][0], rows[m][0]) for c in clusters for m in c.members if m != c.representative]
    # A duplicate is never searched, so its vector is dropped; it is re-embedded if it becomes the kept copy.
    db.executemany("UPDATE chunks SET duplicate_of = ?, vector = NULL WHERE id = ?", marks)
    return len(marks)


def _embed_missing(db: sqlite3.Connection, embedder, batch: int = 256) -> int:
    rows = db.execute("SELECT id, text FROM chunks WHERE vector IS NULL AND duplicate_of IS NULL ORDER BY id")
    rows = rows.fetchall()
    for start in range(0, len(rows), batch):
        part = rows[start:start + batch]
        vectors = embedder.embed([text for _, text in part])
        db.executemany("UPDATE chunks SET vector = ? WHERE id = ?",
                       [(vector.tobytes(), cid) for (cid, _), vector in zip(part, vectors)])
    return len(rows)


def bm25_tokens(texts: list[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


def _write_bm25(db: sqlite3.Connection, index_dir: Path) -> None:
    import bm25s

    rows = db.execute("SELECT id, text FROM chunks WHERE duplicate_of IS NULL ORDER BY id").fetchall()
    retriever = bm25s.BM25()
    if rows:
        retriever.index(bm25_tokens([text for _, text in rows]), show_progress=False)
    with atomic_dir(index_dir / BM25_DIR) as tmp:
        if rows:
            retriever.save(str(tmp), show_progress=False)
        (tmp / "ids.json").write_text(json.dumps([cid for cid, _ in rows]), encoding="utf-8")


def index_hash(db: sqlite3.Connection) -> str:
    """sha256 of what the index was built from and how: its settings and each file's path and content hash.
    Two indexes with the same hash hold the same chunks and vectors (same model, same chunking)."""
    import hashlib

    payload = {"meta": sorted(db.execute("SELECT key, value FROM meta")),
               "files": sorted(db.execute("SELECT path, sha256 FROM files"))}
    return hashlib.sha256(json.dumps(payload).encode("utf-8")).hexdigest()
