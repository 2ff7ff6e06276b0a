"""Retrieval-augmented generation: read documents, chunk by tokens, embed, index (SQLite + BM25), retrieve with
reciprocal rank fusion, answer with citations through the one inference engine. Metrics live in eval/registry."""
