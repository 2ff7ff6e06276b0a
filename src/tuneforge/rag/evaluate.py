"""Retrieval evaluation of one index over a question set, per retrieval mode."""
from __future__ import annotations

from tuneforge.rag.metrics import ndcg_at_k, recall_at_k, reciprocal_rank
from tuneforge.rag.retrieve import MODES

RERANKED = "hybrid+rerank"


def evaluate_retrieval(retriever, questions: list[dict], k: int = 5, modes=MODES) -> dict[str, dict[str, float]]:
    """Mean recall@k, MRR (over the first 2k passages) and nDCG@k per mode; also the per-question scores. The
    modes are scored without reranking; a retriever with a reranker also gets a "hybrid+rerank" row."""
    out = {}
    reranker = getattr(retriever, "reranker", None)
    runs = [(mode, mode, False) for mode in modes] + ([(RERANKED, "hybrid", True)] if reranker else [])
    for name, mode, rerank in runs:
        per = []
        for row in questions:
            keys = [p.key for p in retriever.search(row["question"], 2 * k, mode, rerank=rerank)]
            per.append({"recall": recall_at_k(keys, row["gold"], k), "mrr": reciprocal_rank(keys, row["gold"]),
                        "ndcg": ndcg_at_k(keys, row["gold"], k)})
        out[name] = {m: sum(p[m] for p in per) / len(per) for m in ("recall", "mrr", "ndcg")}
        out[name]["per_question"] = per
    return out


def evaluate_citations(retriever, engine, questions: list[dict], k: int = 5, max_new_tokens: int = 160,
                       entails=None) -> dict[str, float]:
    """Answer each question from its k hybrid passages (reranked when the retriever has a reranker); mean ALCE
    citation recall / precision (lexical entailment unless `entails` is given) and the share of answers containing
    the reference answer's words."""
    from tuneforge.rag.answer import answer_questions
    from tuneforge.rag.metrics import citation_scores, lexical_entails

    entails = entails or lexical_entails
    passages = [retriever.search(row["question"], k, "hybrid") for row in questions]
    answers = answer_questions(engine, [row["question"] for row in questions], passages,
                               max_new_tokens=max_new_tokens)
    per = [citation_scores(a.text, [p.text for p in a.passages], entails) for a in answers]
    answered = [lexical_entails(a.text, row["answer"]) for a, row in zip(answers, questions) if row.get("answer")]
    return {"citation_recall": sum(p["citation_recall"] for p in per) / len(per),
            "citation_precision": sum(p["citation_precision"] for p in per) / len(per),
            "answers_citing": sum(bool(a.cited) for a in answers) / len(answers),
            "answer_overlap": sum(answered) / len(answered) if answered else 0.0,
            "answers": [a.text for a in answers]}
