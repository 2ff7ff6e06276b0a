"""`tuneforge rag ...`: build/update an index, query it (optionally answering with a model), evaluate retrieval."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Retrieval-augmented generation: index documents, retrieve, answer with citations.",
                  no_args_is_help=True)

ModelOption = Annotated[str | None, typer.Option("--embedding-model", help="Embedding model: catalog name "
                                                 "(default all-minilm-l6-v2), sentence-transformers folder or hub id.")]
RerankerOption = Annotated[str | None, typer.Option("--reranker", help="Cross-encoder folder (or hub id, needs the "
                                                    "hub): rerank the retrieved candidates, keep the k best.")]
CandidatesOption = Annotated[int, typer.Option("--rerank-candidates", min=1, help="Candidates retrieved for the "
                                               "reranker (at least k are).")]


@app.callback()
def _quiet() -> None:
    # Every rag command loads models: our own messages only, not weight-loading bars or bitsandbytes notices.
    from tuneforge.integrations.quiet import quiet_third_party_output

    quiet_third_party_output()


def _out():
    from tuneforge.console import make_console

    return make_console(stderr=False)


@app.command("index")
def index(
    docs: Annotated[list[Path], typer.Argument(help="Files or folders (.txt .md .rst .html .pdf).")],
    out: Annotated[Path, typer.Option("--out", help="Index folder (created, or updated in place).")],
    embedding_model: ModelOption = None,
    chunk_size: Annotated[int, typer.Option(help="Tokens per chunk (embedding model's tokenizer).")] = 200,
    overlap: Annotated[int, typer.Option(help="Tokens shared by consecutive chunks.")] = 40,
    dedup_threshold: Annotated[float, typer.Option(help="Near-duplicate similarity at which a chunk is dropped.")]
    = 0.9,
) -> None:
    """Index documents; re-running re-embeds only changed files and removes files no longer given."""
    import time

    from tuneforge.rag.embed import DEFAULT_EMBEDDING_MODEL, Embedder
    from tuneforge.rag.index import build_index

    start = time.perf_counter()
    embedder = Embedder(embedding_model or _index_model(out) or DEFAULT_EMBEDDING_MODEL)
    report = build_index(docs, out, embedder, chunk_size=chunk_size, overlap=overlap, dedup_threshold=dedup_threshold)
    _out().print(f"{out}: {len(report.added)} added, {len(report.changed)} changed, {len(report.removed)} removed, "
                 f"{report.unchanged} unchanged files; {report.chunks} chunks ({report.duplicates} near-duplicates "
                 f"not searched), {report.embedded} embedded in {time.perf_counter() - start:.1f} s", highlight=False)


def _index_model(out: Path) -> str | None:
    from tuneforge.rag.index import DB_NAME, connect, read_meta

    if not (out / DB_NAME).is_file():
        return None
    db = connect(out)
    try:
        return read_meta(db).get("model")
    finally:
        db.close()


@app.command("query")
def query(
    index_dir: Annotated[Path, typer.Argument(help="Index folder.")],
    question: Annotated[str, typer.Argument(help="The question.")],
    model: Annotated[str | None, typer.Option("--model", help="Answer with this model (any model reference).")]
    = None,
    k: Annotated[int, typer.Option("-k", help="Passages to retrieve.")] = 5,
    mode: Annotated[str, typer.Option(help="hybrid | dense | bm25")] = "hybrid",
    max_new_tokens: Annotated[int, typer.Option(help="Answer length limit.")] = 160,
    reranker: RerankerOption = None,
    rerank_candidates: CandidatesOption = 20,
) -> None:
    """Retrieve k passages (with --reranker: the k best of --rerank-candidates by the cross-encoder); with
    --model, answer citing them as [n] and list the cited sources."""
    passages = _retriever(index_dir, reranker, rerank_candidates).search(question, k, mode)
    console = _out()
    if model is None:
        for n, p in enumerate(passages, 1):
            rerank = f"  rerank {p.rerank_score:.4f}" if p.rerank_score is not None else ""
            console.print(f"[bold][{n}][/bold] {p.where()}  score {p.score:.4f}{rerank}", highlight=False)
            console.print("    " + " ".join(p.text.split())[:400], highlight=False, markup=False)
        return
    from tuneforge.models.inference import InferenceEngine
    from tuneforge.models.ref import parse_model_ref
    from tuneforge.rag.answer import answer_questions

    engine = InferenceEngine.from_ref(parse_model_ref(model))
    result = answer_questions(engine, [question], [passages], max_new_tokens=max_new_tokens)[0]
    console.print(result.text, highlight=False, markup=False)
    console.print("\n[bold]sources[/bold]" if result.cited else "\n[yellow]the answer cites no passage[/yellow]")
    for n, p in result.sources():
        console.print(f"  [{n}] {p.where()}", highlight=False, markup=False)


@app.command("eval")
def evaluate(
    index_dir: Annotated[Path, typer.Argument(help="Index folder.")],
    questions: Annotated[Path | None, typer.Option("--questions", help="JSONL: question, gold (keys = source file "
                                                   "stems), answer. Default: the bundled demo set.")] = None,
    k: Annotated[int, typer.Option("-k", help="Cut-off for recall and nDCG; passages given to the RAG systems.")]
    = 5,
    model: Annotated[str | None, typer.Option("--model", help="Base model: also answer each question without and "
                                              "with retrieval (base, base+RAG).")] = None,
    tuned: Annotated[str | None, typer.Option("--tuned", help="Adapter folder or run on the same base: adds tuned "
                                              "and tuned+RAG (the four-way table).")] = None,
    metric: Annotated[list[str] | None, typer.Option("--metric", help="Answer metric from the registry "
                                                     "(repeatable; default token_f1, rougeL, contains_answer).")]
    = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for results.json and report.html (with --model).")]
    = Path("rag-eval"),
    max_new_tokens: Annotated[int, typer.Option(help="Answer length limit (with --model).")] = 96,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    reranker: RerankerOption = None,
    rerank_candidates: CandidatesOption = 20,
) -> None:
    """Retrieval recall@k, MRR and nDCG@k of hybrid vs dense-only vs BM25-only (with --reranker, also
    hybrid+rerank); with --model (and --tuned), the answers of base / tuned / base+RAG / tuned+RAG with answer and
    citation metrics and paired CIs (the RAG systems get the reranked passages when --reranker is given).

    Example: tuneforge rag eval index --model smollm2-135m-instruct --tuned runs/raft/adapter --out rag-eval
    """
    from rich.table import Table

    from tuneforge.rag.demo import demo_questions_path, load_questions
    from tuneforge.rag.evaluate import evaluate_retrieval

    rows = load_questions(questions or demo_questions_path())
    retriever = _retriever(index_dir, reranker, rerank_candidates)
    results = evaluate_retrieval(retriever, rows, k)
    table = Table(title=f"retrieval on {len(rows)} questions")
    for column in ("mode", f"recall@{k}", "MRR", f"nDCG@{k}"):
        table.add_column(column)
    for mode, scores in results.items():
        table.add_row(mode, *(f"{scores[m]:.3f}" for m in ("recall", "mrr", "ndcg")))
    _out().print(table)
    if model is None:
        if tuned:
            raise typer.BadParameter("--tuned needs --model (the base it was trained on)", param_hint="--tuned")
        return
    from tuneforge.rag.fourway import DEFAULT_METRICS, run_fourway, table_rows
    from tuneforge.rag.fourway_report import write_fourway

    engine = _engine_with_tuned(model, tuned)
    document = run_fourway(retriever, engine, rows, tuned=tuned is not None, k=k,
                           metrics=tuple(metric or DEFAULT_METRICS), max_new_tokens=max_new_tokens, seed=seed)
    document["sources"] = {"index": str(index_dir), "model": model, "tuned": tuned,
                           "questions": str(questions or demo_questions_path())}
    if reranker:
        document["sources"].update(reranker=reranker, rerank_candidates=rerank_candidates)
    header, cells = table_rows(document)
    four = Table(title=f"answers on {len(rows)} questions (k={k})")
    for column in header:
        four.add_column(column)
    for row in cells:
        four.add_row(*row)
    _out().print(four)
    for pair, comparison in document["comparisons"].items():
        shown = ", ".join(f"{m} {c['delta']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
                          for m, c in comparison.items())
        _out().print(f"{pair}: {shown}", highlight=False)
    results_path, report_path = write_fourway(document, out)
    _out().print(f"results: {results_path}\nreport: {report_path}", highlight=False)


def _retriever(index_dir: Path, reranker: str | None, candidates: int):
    """The index's retriever; with a reranker, one that reranks every search (a missing reranker folder fails before
    any model is loaded)."""
    from tuneforge.rag.retrieve import Retriever

    if reranker:
        from tuneforge.rag.rerank import resolve_reranker_model

        resolve_reranker_model(reranker)
    retriever = Retriever(index_dir)
    if reranker:
        from tuneforge.rag.rerank import Reranker

        retriever.set_reranker(Reranker(reranker), candidates)
    return retriever


def _engine_with_tuned(model: str, tuned: str | None):
    """The base engine, with the tuned adapter attached as 'tuned' (one copy of the base weights)."""
    from tuneforge.errors import ConfigError
    from tuneforge.models.inference import InferenceEngine
    from tuneforge.models.ref import parse_model_ref
    from tuneforge.rag.fourway import TUNED

    engine = InferenceEngine.from_ref(parse_model_ref(model))
    if tuned:
        folder = Path(tuned)
        if (folder / "adapter_config.json").is_file():
            adapter = str(folder)
        elif (folder / "adapter" / "adapter_config.json").is_file():  # a run directory
            adapter = str(folder / "adapter")
        else:
            adapter = parse_model_ref(tuned).adapter_path  # a registry or run reference that names an adapter
        if adapter is None:
            raise ConfigError(f"--tuned {tuned}: not an adapter folder or a run with an adapter",
                              hint="give the PEFT adapter trained on --model, or its run directory")
        engine.add_adapter(TUNED, adapter)
    return engine


@app.command("demo")
def demo(out: Annotated[Path, typer.Argument(help="Folder to write the demo corpus into.")]) -> None:
    """Write the bundled demo corpus (Python's language reference, pydoc_data.topics) as one file per section."""
    from tuneforge.rag.demo import write_demo_corpus

    files = write_demo_corpus(out)
    _out().print(f"wrote {len(files)} sections to {out}; next: tuneforge rag index {out} --out INDEX", highlight=False)
