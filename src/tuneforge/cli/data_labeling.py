"""`tuneforge data select` (active learning) and `tuneforge data agreement` (inter-annotator agreement).

Registered on the `tuneforge data` app (tuneforge.cli.data imports this module); parsing and printing only, the
work lives in tuneforge.data.labeling.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from tuneforge.cli.data import _write_jsonl, app
from tuneforge.console import make_console


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@app.command()
def agreement(
    files: list[str] = typer.Argument(..., help="Two or more annotators' files (JSONL, JSON, CSV, Parquet), one "
                                      "per annotator, labelling the same rows."),
    label_field: str = typer.Option("label", "--field", help="Field holding the label (dotted for nested, e.g. "
                                    "meta.label)."),
    id_field: str = typer.Option("id", "--id", help="Field that identifies a row across the files."),
    out: str = typer.Option("adjudicate.jsonl", "--out", "-o", help="Rows the annotators disagree on (JSONL), "
                            "with every annotator's label and file:line, for adjudication."),
    report_out: Optional[str] = typer.Option(None, "--report", help="Also write the full report as JSON here."),
) -> None:
    """Inter-annotator agreement: Cohen's kappa per pair, Fleiss' kappa and Krippendorff's alpha (nominal),
    overall and per label (one-vs-rest); rows missing from a file are reported; disagreements go to --out.

    Example: tuneforge data agreement ann_alice.jsonl ann_bob.jsonl ann_carol.jsonl --field label --id id
    """
    from tuneforge.atomic import write_json_atomic
    from tuneforge.data.labeling.agreement import agreement_report, read_annotations

    report = agreement_report([read_annotations(f, label_field, id_field) for f in files])
    _write_jsonl(Path(out), report["adjudicate"])
    if report_out:
        write_json_atomic(Path(report_out), report)
    console = make_console(stderr=False)
    overall = report["overall"]
    console.print(f"{report['rows']} rows, {len(report['raters'])} annotators, labels {', '.join(report['labels'])}; "
                  f"{report['rows_labelled_by_all']} labelled by all")
    table = Table("labels", "Cohen's kappa (mean of pairs)", "Fleiss' kappa", "Krippendorff's alpha", "count")
    table.add_row("overall", _fmt(overall["cohen_kappa_mean"]), _fmt(overall["fleiss_kappa"]),
                  _fmt(overall["krippendorff_alpha"]), str(report["rows"]))
    for name, stats in report["per_label"].items():
        table.add_row(f"{name} vs rest", _fmt(stats["cohen_kappa_mean"]), _fmt(stats["fleiss_kappa"]),
                      _fmt(stats["krippendorff_alpha"]), str(stats["count"]))
    console.print(table)
    pairs = Table("pair", "Cohen's kappa", "rows")
    for pair, stats in overall["cohen_kappa"].items():
        pairs.add_row(pair, _fmt(stats["kappa"]), str(stats["rows"]))
    console.print(pairs)
    for rater, ids in report["missing"].items():
        shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        console.print(f"[yellow]missing in {rater}:[/] {len(ids)} row(s): {shown}")
    for rater, ids in report["unlabelled"].items():
        console.print(f"[yellow]no {label_field} in {rater}:[/] {len(ids)} row(s): {', '.join(ids[:10])}")
    console.print(f"{len(report['adjudicate'])} row(s) to adjudicate -> {out}")
    if report_out:
        console.print(f"report -> {report_out}")


@app.command()
def select(
    pool: str = typer.Argument(..., help="Unlabelled rows (JSONL, JSON, CSV, Parquet): chat messages, prompt, "
                               "instruction or text, or any fields with --prompt."),
    model: str = typer.Option(..., "--model", "-m", help="Model that judges its own uncertainty: a run, a catalog "
                              "name, a folder, a .gguf or an adapter reference (tuneforge.models.ref)."),
    budget: int = typer.Option(..., "--budget", "-n", min=1, help="How many rows to select for labelling."),
    out: str = typer.Option("to_label.jsonl", "--out", "-o", help="The selected rows, most useful first, each "
                            "with a `selection` record (rank, uncertainty, cluster)."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Comma-separated label set: a label task, scored "
                                         "from label-token log-probabilities. Without it: generation uncertainty."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Prompt template with {field} placeholders filled "
                                         "from each row (e.g. \"Review: {text}\\nSentiment:\")."),
    measure: str = typer.Option("entropy", "--measure", help="Label tasks: entropy (normalised) or margin "
                                "(1 - p1 + p2). Generation always uses mean answer-token entropy."),
    diversity: bool = typer.Option(True, "--diversity/--no-diversity", help="Cluster the uncertain candidates by "
                                   "embedding and take one per cluster (off: the most uncertain rows)."),
    prefilter: int = typer.Option(10, "--prefilter", min=1, help="Candidates clustered: this many x budget of the "
                                  "most uncertain rows."),
    embedder: str = typer.Option("all-minilm-l6-v2", "--embedder", help="Embedding model for diversity: a catalog "
                                 "name, a sentence-transformers folder or a hub id."),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens", min=1, help="Answer length for generation "
                                       "uncertainty."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Rows per forward pass."),
    seed: int = typer.Option(0, "--seed", help="Seed of the k-means initialisation."),
) -> None:
    """Active learning: rank unlabelled rows by the model's uncertainty and diversity and write the N most useful
    to label, with their scores.

    Example: tuneforge data select pool.jsonl --model runs/quickstart --budget 20 --out to_label.jsonl
    """
    from tuneforge.data.labeling.select import answer_entropy, label_uncertainty, read_pool, select_rows
    from tuneforge.errors import DataError
    from tuneforge.models.inference import InferenceEngine
    from tuneforge.models.ref import parse_model_ref
    from tuneforge.registry.release import resolve_model_ref

    label_set = [x.strip() for x in labels.split(",") if x.strip()] if labels else None
    if label_set is not None and len(label_set) < 2:
        raise DataError("--labels needs at least two labels")
    if measure not in ("entropy", "margin"):
        raise DataError(f"--measure {measure!r}: use entropy or margin")
    rows = read_pool(pool, prompt)
    engine = InferenceEngine.from_ref(resolve_model_ref(parse_model_ref(model)))
    items = [r.item for r in rows]
    if label_set:
        uncertainty = label_uncertainty(engine.label_logprobs(items, label_set, batch_size), label_set, measure)
        used = f"label {measure}"
    else:
        uncertainty = answer_entropy(engine, items, max_new_tokens=max_new_tokens, batch_size=batch_size)
        used = "mean answer-token entropy (nats)"
    embed = None
    if diversity and budget < len(rows):
        from tuneforge.rag.embed import Embedder

        embed = Embedder(embedder)
    chosen = select_rows(rows, uncertainty, budget=budget, embedder=embed, prefilter=prefilter, seed=seed,
                         measure=used)
    _write_jsonl(Path(out), chosen.rows)
    console = make_console(stderr=False)
    table = Table("rank", "uncertainty", "cluster (size)", "where", "text", title=f"{len(chosen.rows)} of "
                  f"{chosen.pool} rows by {used}" + (f", one per cluster of {chosen.candidates} candidates"
                                                     if chosen.clusters else ""))
    texts = {r.where: r.text for r in rows}
    for row in chosen.rows:
        sel = row["selection"]
        text = texts[sel["where"]].replace("\n", " ")
        table.add_row(str(sel["rank"]), _fmt(sel["uncertainty"]),
                      f"{sel['cluster']} ({sel['cluster_size']})" if "cluster" in sel else "-", sel["where"],
                      text[:60] + ("..." if len(text) > 60 else ""))
    console.print(table)
    console.print(f"-> {out}")
