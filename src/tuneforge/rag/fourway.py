"""Base vs tuned vs base+RAG vs tuned+RAG on the same questions: answer metrics, citation metrics, paired CIs.

    tuneforge rag eval INDEX --model BASE --tuned ADAPTER_OR_RUN --out rag-eval/

Each question is answered four ways by one engine (the tuned side is an adapter on the same base weights): alone
(the question as the only user turn) and with its k hybrid-retrieved passages (rag.answer.rag_messages; the same
passages for both RAG systems). Answer metrics come from the one metric registry, scored against the question's
reference answer; citation recall / precision (rag.metrics, lexical entailment unless another judge is given) are
scored for the RAG systems only. Differences are the eval pipeline's paired bootstrap CIs and paired tests
(eval.pipeline.compare_sides), each system against base, and tuned+RAG against base+RAG (what tuning adds once
retrieval is there). Without --tuned, only base and base+RAG are run.
"""
from __future__ import annotations

from tuneforge.eval import registry
from tuneforge.rag.metrics import citation_scores, lexical_entails

SYSTEMS = ("base", "tuned", "base+rag", "tuned+rag")
CITATION_METRICS = tuple(registry.group("citation"))
DEFAULT_METRICS = tuple(registry.expand(["rag_answer"]))
TUNED = "tuned"


def comparisons_for(systems: list[str]) -> list[tuple[str, str]]:
    """(reference, challenger) pairs: every system against base, and tuned+rag against base+rag."""
    pairs = [("base", s) for s in systems if s != "base"]
    if "tuned+rag" in systems:
        pairs.append(("base+rag", "tuned+rag"))
    return pairs


def run_fourway(retriever, engine, questions: list[dict], *, tuned: bool, k: int = 5,
                metrics: tuple[str, ...] = DEFAULT_METRICS, max_new_tokens: int = 96, seed: int = 0,
                n_resamples: int = 2000, entails=lexical_entails) -> dict:
    """The results document: systems' summaries, per-item predictions and scores, comparisons with CIs."""
    from tuneforge.eval.pipeline import compare_sides

    metrics = tuple(metrics)
    for name in metrics:
        registry.item_scorer(name)  # an unknown or non-item metric fails before any generation
    items = [{"id": f"q{row.get('line', i + 1)}", "question": row["question"], "reference": row.get("answer") or ""}
             for i, row in enumerate(questions)]
    if not all(item["reference"] for item in items) and metrics:
        missing = [item["id"] for item in items if not item["reference"]]
        raise ValueError(f"answer metrics need a reference answer for every question; missing: {', '.join(missing)}")
    passages = [retriever.search(item["question"], k, "hybrid") for item in items]
    systems = list(SYSTEMS) if tuned else ["base", "base+rag"]
    sides = {}
    for system in systems:
        rag = system.endswith("+rag")
        if rag:
            from tuneforge.rag.answer import rag_messages

            prompts = [rag_messages(item["question"], ps) for item, ps in zip(items, passages)]
        else:
            prompts = [[{"role": "user", "content": item["question"]}] for item in items]
        adapter = TUNED if system.startswith("tuned") else None
        # Named per prompt even for the base (None): once an adapter is attached, a call without `adapters` runs
        # with whichever adapter is active, which would make "base" the tuned model.
        completions = engine.generate(prompts, max_new_tokens=max_new_tokens, batch_size=8,
                                      adapters=[adapter] * len(prompts), description=f"answering: {system}")
        per_item = []
        for item, completion, ps in zip(items, completions, passages):
            text = completion.text.strip()
            scores = {m: float(registry.item_scorer(m)(text, item["reference"])) for m in metrics}
            if rag:
                cites = citation_scores(text, [p.text for p in ps], entails)
                scores.update({m: cites[m] for m in CITATION_METRICS})
            per_item.append({"id": item["id"], "prediction": text, "scores": scores})
        names = list(metrics) + (list(CITATION_METRICS) if rag else [])
        summary = {m: sum(r["scores"][m] for r in per_item) / len(per_item) for m in names}
        sides[system] = {"source": system, "summary": summary, "per_item": per_item}
    comparisons = {}
    for a, b in comparisons_for(systems):
        shared = [m for m in sides[b]["summary"] if m in sides[a]["summary"]]
        comparisons[f"{b} vs {a}"] = compare_sides(sides[a], sides[b], shared, seed=seed, n_resamples=n_resamples)
    return {"kind": "rag_fourway", "systems": systems, "metrics": list(metrics),
            "citation_metrics": list(CITATION_METRICS), "k": k, "n_items": len(items),
            "models": {s: {"source": sides[s]["source"], "summary": sides[s]["summary"]} for s in systems},
            "comparisons": comparisons,
            "items": [{"id": item["id"], "question": item["question"], "reference": item["reference"],
                       "passages": [{"chunk_id": p.id, "path": p.source} for p in ps],
                       **{s: {"prediction": sides[s]["per_item"][i]["prediction"],
                              "scores": sides[s]["per_item"][i]["scores"]} for s in systems}}
                      for i, (item, ps) in enumerate(zip(items, passages))]}


def table_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the four-way table: one row per metric, one column per system ('-' where not scored)."""
    systems = results["systems"]
    rows = []
    for metric in results["metrics"] + results["citation_metrics"]:
        cells = [f"{results['models'][s]['summary'][metric]:.3f}" if metric in results["models"][s]["summary"]
                 else "-" for s in systems]
        rows.append([metric, *cells])
    return ["metric", *systems], rows
