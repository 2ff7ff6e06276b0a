"""`tuneforge data ...`: inspect, validate, audit, clean, split, mix and convert datasets.

Parsing and printing only; the work lives in tuneforge.data. Every command reads every format and file type
that `tuneforge.data.formats` knows, and writes JSONL in the normalised formats, which training reads directly.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from tuneforge.console import make_console

_HELP = ("Datasets: validate, audit, clean, split, mix, convert, synthesize (RAFT), preview how rows render; select "
         "rows to label, annotator agreement, counterfactual copies.")
app = typer.Typer(help=_HELP, no_args_is_help=True)
_FORMAT_HELP = "Row format: auto, chat, alpaca, sharegpt, prompt_completion, preference, kto or text."


@app.callback()
def _group() -> None:
    """Datasets: validate, audit, clean, split, mix, convert, preview; select, agreement, counterfactual."""


def _load_tokenizer(model: str, chat_template_path: str | None):
    # Imported lazily: model resolution pulls in transformers, which `tuneforge --help` must not pay for.
    from tuneforge.models.loading import load_tokenizer
    from tuneforge.models.sources import resolve_model

    return load_tokenizer(resolve_model(model), chat_template_path=chat_template_path)


@app.command()
def preview(
    data: str = typer.Argument(..., help="Dataset file (JSONL/JSON) or a bundled one like quickstart:train.jsonl."),
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m",
                              help="Model whose tokenizer and chat template render the row (catalog name, "
                              "folder, .gguf or hub id)."),
    index: int = typer.Option(0, "--index", "-i", help="Row to show (0-based; negative counts from the end)."),
    max_length: int = typer.Option(512, "--max-length", min=1, help="Truncate to this many tokens, as training does."),
    train_on: str = typer.Option("assistant", "--train-on", help="Which tokens carry loss: assistant or all."),
    data_format: str = typer.Option("auto", "--format", help=_FORMAT_HELP),
    chat_template: Optional[str] = typer.Option(None, "--chat-template",
                                                help="Jinja chat template file to use instead of the model's."),
) -> None:
    """Render one example exactly as training will, highlighting the tokens that carry loss (trained spans are
    wrapped in [[...]] when the output is not a colour terminal).

    Example: tuneforge data preview quickstart:train.jsonl --index 3
    """
    from tuneforge.data.formats import load_dataset_file
    from tuneforge.data.preview import build_preview, preview_renderable
    from tuneforge.errors import DataError

    if train_on not in ("assistant", "all"):
        raise DataError(f"--train-on must be `assistant` or `all`, got {train_on!r}")
    loaded = load_dataset_file(data, data_format)
    tokenizer = _load_tokenizer(model, chat_template)
    shown = build_preview(loaded, tokenizer, index=index, max_length=max_length, train_on=train_on)
    console = make_console(stderr=False)
    # Piped output, a log file or NO_COLOR lose the colours, and with them which tokens are trained.
    marks = not console.is_terminal or console.no_color
    console.print(preview_renderable(loaded, shown, train_on, max_length, marks=marks))


# ------------------------------------------------------------------------------------------ shared bits


def _console() -> Console:
    return make_console()


def _rejected_path(out: str) -> Path:
    return Path(out).with_name(Path(out).name + ".rejected.jsonl")


def _write_jsonl(path: Path, rows) -> str:
    from tuneforge.atomic import write_chunks_atomic

    return write_chunks_atomic(path, (json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in rows))


def _load(data: str, data_format: str, skip_invalid: bool, out: str | None, progress: bool = False):
    """Load; with --skip-invalid, rejected rows go to `<out>.rejected.jsonl` (written even when empty, so a
    pipeline can count on the file)."""
    from tuneforge.data.formats import load_dataset_file
    from tuneforge.errors import DataError

    if skip_invalid and not out:
        raise DataError("--skip-invalid needs --out: valid rows and the rejected-rows side file are written next to it")
    loaded = load_dataset_file(data, data_format, skip_invalid=skip_invalid, progress=progress)
    _print_warnings(loaded)
    if skip_invalid:
        side = _rejected_path(out)  # type: ignore[arg-type]
        _write_jsonl(side, loaded.rejected)
        if loaded.rejected:
            _console().print(f"[yellow]{len(loaded.rejected)} invalid rows rejected[/] -> {side}")
        if not loaded.rows:
            raise DataError(f"no valid rows left in {data}", hint=f"see the reasons in {side}")
    return loaded


def _print_warnings(loaded) -> None:
    """What loading kept but the user should see: keys moved under meta, blank lines skipped."""
    from rich.markup import escape

    from tuneforge.data.text import format_lines

    console = _console()
    for warning in loaded.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    blank = loaded.blank_lines
    if blank:
        many = len(blank) > 1
        console.print(f"[yellow]note:[/] {escape(loaded.path)}: {len(blank)} blank line{'s' if many else ''} skipped "
                      f"(line{'s' if many else ''} {format_lines(blank)})")


# ------------------------------------------------------------------------------------------- commands


@app.command()
def validate(
    data: str = typer.Argument(..., help="Dataset: .jsonl, .json, .csv, .parquet, a saved datasets folder, "
                               "or quickstart:NAME."),
    data_format: str = typer.Option("auto", "--format", help=_FORMAT_HELP),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Write valid rows to --out and invalid ones "
                                      "to <out>.rejected.jsonl (with line and reasons) instead of failing."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Where to write the valid, normalised rows (JSONL)."),
) -> None:
    """Check every row and list every problem at once (file, line, field); exit non-zero on any.

    Example: tuneforge data validate train.jsonl --skip-invalid --out clean/train.jsonl
    """
    loaded = _load(data, data_format, skip_invalid, out)
    if out:
        _write_jsonl(Path(out), loaded.rows)
    typer.echo(f"{data}: {len(loaded)} valid {loaded.format} rows ({loaded.file_type})"
               + (f", {len(loaded.rejected)} rejected" if skip_invalid else "") + (f" -> {out}" if out else ""))


@app.command()
def audit(
    data: str = typer.Argument(..., help="Training dataset file or folder (any supported format and file type)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Tokenizer + chat template for token lengths "
                                        "(catalog name, folder or hub id); without it token statistics are skipped."),
    max_length: int = typer.Option(2048, "--max-length", min=1, help="Training max length in tokens."),
    validation: Optional[str] = typer.Option(None, "--validation", help="Validation split, checked for leakage."),
    test: Optional[str] = typer.Option(None, "--test", help="Test split, checked for leakage."),
    eval_file: list[str] = typer.Option([], "--eval-file",
                                        help="Extra evaluation file checked for leakage (repeatable)."),
    near_threshold: float = typer.Option(0.8, "--near-threshold", min=0.01, max=1.0, help="Similarity at which "
                                         "two rows count as near duplicates: the share of their words that line up "
                                         "(0.8: at most one word in five differs)."),
    ngram: int = typer.Option(13, "--ngram", min=1, help="Word n-gram size for leakage overlap."),
    leak_min_share: float = typer.Option(0.1, "--leak-min-share", min=0.0, max=1.0, help="Share of an eval item's "
                                         "n-grams found in one training row for the pair to be reported (n-grams "
                                         "shared by many training rows count as boilerplate, not leakage)."),
    label_field: Optional[str] = typer.Option(None, "--label-field", help="Field whose value balance to report, "
                                              "looked up in the row, then in its meta (as `split --field`); e.g. "
                                              "category or meta.category. KTO's label is used by default."),
    cohort_field: Optional[str] = typer.Option(None, "--cohort-field", help="Field naming each row's cohort "
                                               "(e.g. gender or meta.region) for class balance by cohort; without "
                                               "it cohorts are detected from the --swaps terms."),
    swaps: str = typer.Option("default", "--swaps", help="Swap list YAML whose terms detect cohorts (default: "
                              "tuneforge/assets/fairness/swaps.yaml)."),
    data_format: str = typer.Option("auto", "--format", help=_FORMAT_HELP),
    out: str = typer.Option("audit", "--out", "-o", help="Output directory for audit.json and audit.html."),
) -> None:
    """Audit a dataset: token lengths vs max length and context window, truncation loss, duplicates, conflicts,
    personal data, train/eval leakage, label balance and class balance by cohort -> DIR/audit.json + DIR/audit.html.

    Example: tuneforge data audit train.jsonl --model smollm2-135m-instruct --max-length 512 \\
        --test test.jsonl --out audit
    """
    from tuneforge.atomic import write_chunks_atomic
    from tuneforge.data.audit import AuditInputs, run_audit
    from tuneforge.data.audit_report import render_html

    inputs = AuditInputs(train=data, format=data_format, validation=validation, test=test, eval_files=list(eval_file),
                         model=model, max_length=max_length, near_threshold=near_threshold, ngram=ngram,
                         leak_min_share=leak_min_share, label_field=label_field, cohort_field=cohort_field,
                         swaps=swaps)
    report = run_audit(inputs, progress=True)
    folder = Path(out)
    write_chunks_atomic(folder / "audit.json",
                        [json.dumps(report, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"])
    write_chunks_atomic(folder / "audit.html", [render_html(report).encode("utf-8")])
    _print_audit(report, folder)


def _print_audit(report: dict, folder: Path) -> None:
    console = make_console(stderr=False)
    src = report["sources"]["train"]
    console.print(f"[bold]{src['path']}[/]: {src['rows']} {src['format']} rows")
    tokens = report.get("tokens")
    if tokens:
        total = tokens["fields"].get("total") or next(iter(tokens["fields"].values()))
        context = (f", {tokens['over_context_window']} rows > context window {tokens['context_window']}"
                   if tokens.get("context_window") else "")
        console.print(f"tokens P50 {total.get('p50')} P95 {total.get('p95')} P99 {total.get('p99')} "
                      f"max {total.get('max')}; "
                      f"{tokens['over_max_length']} rows > max length {tokens['max_length']} "
                      f"(loses {tokens['lost_trained_share']:.2%} of trained tokens){context}; "
                      f"trained-token ratio {tokens['trained_token_ratio']:.2%}")
    dup = report["duplicates"]
    console.print(f"duplicates: {dup['exact_groups']} exact groups, {dup['near_clusters']} near clusters; "
                  f"conflicts: {report['conflicts']['groups']}; PII: {report['pii']['counts'] or 'none'}")
    if "leakage" in report:
        leak = report["leakage"]
        console.print(f"leakage: {leak['exact_pairs']} exact pairs, {leak['ngram_pairs']} n-gram pairs")
    if report.get("label_balance"):
        console.print(f"labels ({report['label_balance']['field']}): {report['label_balance']['counts']}")
    for group, table in (report.get("cohort_balance") or {}).get("groups", {}).items():
        rows = ", ".join(f"{c} {v['rows']}" for c, v in table["cohorts"].items())
        gap = table["label_share_gap"]
        console.print(f"cohorts ({group}): {rows}" + (f"; largest label-share gap {max(gap.values()):.0%} "
                                                      f"({max(gap, key=gap.get)})" if gap else ""))
    console.print(f"report: {folder / 'audit.json'}, {folder / 'audit.html'}")


@app.command()
def clean(
    data: str = typer.Argument(..., help="Dataset file or folder to clean."),
    out: str = typer.Option(..., "--out", "-o", help="Cleaned JSONL; the log goes to <out>.cleaning_log.jsonl."),
    dedup: str = typer.Option("exact", "--dedup", help="Duplicate removal: exact, near or none (keeps the first row)."),
    near_threshold: float = typer.Option(0.8, "--near-threshold", min=0.01, max=1.0, help="Similarity for --dedup near "
                                         "(share of words that line up; 0.8: at most one word in five differs)."),
    redact_pii: bool = typer.Option(True, "--redact-pii/--no-redact-pii",
                                    help="Replace personal data with typed tags such as <EMAIL>."),
    pii_types: list[str] = typer.Option([], "--pii-types", help="PII types to redact (repeatable; default all): "
                                        "EMAIL, PHONE, CREDIT_CARD, IBAN, IP_ADDRESS, SSN, SECRET, PERSON, ADDRESS."),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=1, help="Token limit (needs --model)."),
    length_policy: str = typer.Option("drop", "--length-policy",
                                      help="Rows over --max-length: drop, truncate or error."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Tokenizer and chat template that count tokens."),
    data_format: str = typer.Option("auto", "--format", help=_FORMAT_HELP),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Drop invalid rows (logged) instead of failing."),
) -> None:
    """Remove duplicates, redact personal data and enforce a length limit; every removed or changed row is
    logged with its source line and reason.

    Example: tuneforge data clean train.jsonl --out train.clean.jsonl --dedup near --max-length 1024 \\
        --model smollm2-135m-instruct
    """
    from tuneforge.data.clean import clean_rows, write_clean
    from tuneforge.data.pii import PII_TYPES
    from tuneforge.errors import DataError

    bad = [t for t in pii_types if t not in PII_TYPES]
    if bad:
        raise DataError(f"unknown --pii-types {', '.join(bad)}", hint=f"use any of: {', '.join(PII_TYPES)}")
    loaded = _load(data, data_format, skip_invalid, out)
    tokenizer = _load_tokenizer(model, None) if model else None
    result = clean_rows(loaded, dedup=dedup, near_threshold=near_threshold, redact_pii=redact_pii,
                        pii_types=list(pii_types) or None, max_length=max_length, length_policy=length_policy,
                        tokenizer=tokenizer, progress=True)
    paths = write_clean(result, out)
    s = result.summary
    make_console(stderr=False).print(
        f"{s['rows_in']} rows in, {s['rows_out']} out; removed {s['removed'] or 'none'}; "
        f"changed {s['changed'] or 'none'}\n-> {paths['output']}\nlog: {paths['log']}")


def _parse_ratios(text: str) -> dict[str, float]:
    from tuneforge.errors import DataError

    ratios: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            ratios[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise DataError(f"bad --ratios entry {part!r}", hint="write e.g. train=0.8,validation=0.1,test=0.1")
    return ratios


@app.command()
def split(
    data: str = typer.Argument(..., help="Dataset file or folder to split."),
    out_dir: str = typer.Option(..., "--out-dir", "-o", help="Folder for <split>.jsonl files and split_manifest.json."),
    strategy: str = typer.Option("random", "--strategy", help="random, stratified (by --field), grouped (whole "
                                 "--field groups stay together) or time (ordered by the ISO date in --field)."),
    split_field: Optional[str] = typer.Option(None, "--field", help="Field for stratified/grouped/time, e.g. user_id "
                                              "(looked up in the row, then in its meta)."),
    ratios: str = typer.Option("train=0.8,validation=0.1,test=0.1", "--ratios", help="name=share pairs summing to 1."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed and input give the same split."),
    data_format: str = typer.Option("auto", "--format", help=_FORMAT_HELP),
) -> None:
    """Split a dataset into parts with a manifest of sha256s and row counts.

    Example: tuneforge data split train.jsonl --out-dir splits --strategy grouped --field user_id --seed 1
    """
    from tuneforge.data.formats import load_dataset_file, resolve_data_path
    from tuneforge.data.split import resolve_field, split_rows, write_splits
    from tuneforge.errors import DataError

    loaded = load_dataset_file(data, data_format)
    if split_field:
        split_field = resolve_field(loaded.rows, split_field, f"--field of the {strategy} split")
    try:
        result = split_rows(loaded.rows, loaded.line_numbers, strategy=strategy, ratios=_parse_ratios(ratios),  # type: ignore[arg-type]
                            seed=seed, field=split_field)
    except ValueError as exc:
        raise DataError(str(exc), hint="see `tuneforge data split --help`") from exc
    source = resolve_data_path(data)
    manifest = write_splits(loaded.rows, result, out_dir, source_path=source if source.is_file() else None)
    for name in result.indices:
        typer.echo(f"{name}: {manifest[name]['rows']} rows -> {manifest[name]['path']}")
    for move in manifest.get("time_ties", {}).get("moved", []):
        typer.echo(f"note: {move['rows_moved']} more row(s) dated {move['timestamp']} went to {move['into']} "
                   f"(boundary {move['boundary']}) so rows with the same timestamp stay in one split")
    typer.echo(f"manifest: {Path(out_dir) / 'split_manifest.json'}")


def _parse_source(spec: str):
    from tuneforge.errors import DataError

    name, sep, rest = spec.partition("=")
    for mark, kind in (("@", "count"), (":", "weight")):
        path, found, number = rest.rpartition(mark)
        if found and path:
            try:
                value = int(number) if kind == "count" else float(number)
            except ValueError:
                continue
            if sep and name.strip():
                return name.strip(), path, kind, value
    raise DataError(f"bad --source {spec!r}",
                    hint="write name=path:weight (e.g. chat=chat.jsonl:0.7) or name=path@count")


@app.command()
def mix(
    source: list[str] = typer.Option(..., "--source", "-s", help="name=path:weight or name=path@count (repeatable; "
                                     "all sources use the same mode)."),
    total: Optional[int] = typer.Option(None, "--total", min=0, help="Rows in the mixture (weight mode)."),
    out: str = typer.Option(..., "--out", "-o", help="Mixed JSONL; the manifest goes to <out>.manifest.json."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    replacement: bool = typer.Option(False, "--replacement", help="Let a source smaller than its quota be upsampled "
                                     "(each row repeated equally, the remainder sampled without replacement); "
                                     "sources with enough rows are still sampled without replacement."),
) -> None:
    """Mix several datasets by weight (with --total) or by count, reproducibly, with a manifest.

    Example: tuneforge data mix --source chat=chat.jsonl:0.7 --source code=code.jsonl:0.3 --total 10000 --out mix.jsonl
    """
    from tuneforge.atomic import write_chunks_atomic
    from tuneforge.data.formats import CHAT_FORMATS, load_dataset_file
    from tuneforge.data.mix import MixSource, mix_datasets
    from tuneforge.errors import DataError

    sources, shapes = [], {}
    for spec in source:
        name, path, kind, value = _parse_source(spec)
        loaded = load_dataset_file(path)
        # alpaca and sharegpt are stored as chat once normalised, so they mix; other formats would make an
        # unreadable file.
        shapes[name] = "chat" if loaded.format in CHAT_FORMATS else loaded.format
        sources.append(MixSource(name=name, rows=loaded.rows, path=path, sha256=loaded.sha256, **{kind: value}))
    if len(set(shapes.values())) > 1:
        raise DataError(f"sources have different row formats: {shapes}",
                        hint="convert them to one format first with `tuneforge data convert`")
    try:
        result = mix_datasets(sources, total=total, seed=seed, replacement=replacement)
    except ValueError as exc:
        raise DataError(str(exc), hint="see `tuneforge data mix --help`") from exc
    sha = _write_jsonl(Path(out), result.rows)
    manifest_path = Path(out).with_name(Path(out).name + ".manifest.json")
    manifest = {**result.manifest, "output": out, "output_sha256": sha}
    write_chunks_atomic(manifest_path, [json.dumps(manifest, indent=2).encode() + b"\n"])
    for st in result.manifest["sources"]:
        typer.echo(f"{st['name']}: {st['actual']} rows ({st['actual_share']:.1%})")
    typer.echo(f"{result.manifest['total']} rows -> {out}\nmanifest: {manifest_path}")


@app.command()
def convert(
    data: str = typer.Argument(..., help="Dataset file or folder to convert."),
    to: str = typer.Option(..., "--to", help="Target: chat, prompt_completion, preference, openai_dpo, kto or text."),
    out: str = typer.Option(..., "--out", "-o", help="Converted JSONL."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Chat template for --to text of conversations."),
    data_format: str = typer.Option("auto", "--format", help=_FORMAT_HELP),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Write invalid or unconvertible rows to "
                                      "<out>.rejected.jsonl instead of failing."),
) -> None:
    """Convert a dataset to another format where that keeps its meaning; an impossible row is an error naming it.

    Example: tuneforge data convert alpaca.jsonl --to chat --out chat.jsonl
    """
    from tuneforge.data.convert import convert_rows

    loaded = _load(data, data_format, skip_invalid, out)
    tokenizer = _load_tokenizer(model, None) if model else None
    rows, rejected = convert_rows(loaded, to, tokenizer=tokenizer, skip=skip_invalid)
    if skip_invalid and rejected:
        _write_jsonl(_rejected_path(out), loaded.rejected + rejected)
    _write_jsonl(Path(out), rows)
    typer.echo(f"{len(rows)} {to} rows -> {out}"
               + (f" ({len(loaded.rejected) + len(rejected)} rejected)" if skip_invalid else ""))

@app.command()
def synth(
    from_index: Path = typer.Option(..., "--from-index", help="RAG index folder (tuneforge rag index) whose chunks "
                                    "become oracle passages."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model that writes the questions and cited "
                                     "answers (any model reference); required with --writer model."),
    writer: str = typer.Option("model", "--writer", help="model: the model writes questions and answers (kept only "
                               "when they cite the oracle); extractive: no model, each question names the oracle's "
                               "section and a sentence's opening words, the answer quotes that sentence and cites it."),
    n: int = typer.Option(..., "--n", help="Chunks to sample: one row each, kept or rejected."),
    out: str = typer.Option(..., "--out", "-o", help="Chat JSONL; rows the check refuses go to "
                            "<out>.rejected.jsonl with the reason."),
    distractors: int = typer.Option(3, help="Retrieved non-oracle passages per row."),
    oracle_share: float = typer.Option(0.8, help="Share of rows whose context holds the oracle; the others' "
                                       "target answer says the passages do not contain the answer."),
    seed: int = typer.Option(0, help="Seed for chunk sampling, oracle placement and question sampling."),
    temperature: float = typer.Option(0.7, help="Sampling temperature of the questions (answers are greedy)."),
    question_tokens: int = typer.Option(48, help="Length limit of a generated question, in tokens."),
    answer_tokens: int = typer.Option(160, help="Length limit of a generated answer, in tokens."),
) -> None:
    """RAFT-style training rows from an index: question, oracle + distractor passages, an answer citing the oracle.

    Example: tuneforge data synth --from-index index --model smollm2-135m-instruct --n 200 --out raft.jsonl
    """
    from tuneforge.errors import ConfigError
    from tuneforge.integrations.quiet import quiet_third_party_output
    from tuneforge.rag.raft import rejected_path, synth_from_index

    if writer not in ("model", "extractive"):
        raise ConfigError(f"--writer must be model or extractive, not {writer!r}")
    if writer == "model" and not model:
        raise ConfigError("--writer model needs --model (the model that writes questions and answers)",
                          hint="or --writer extractive, which needs no model")
    quiet_third_party_output()
    result = synth_from_index(from_index, model or "", Path(out), n=n, distractors=distractors,
                              oracle_share=oracle_share, seed=seed, temperature=temperature,
                              question_tokens=question_tokens, answer_tokens=answer_tokens, writer=writer)
    kept = len(result.rows)
    share = result.oracle_rows / kept if kept else 0.0
    typer.echo(f"{kept} rows -> {out} ({result.oracle_rows} with the oracle, {result.no_oracle_rows} without: "
               f"{share:.0%} oracle)")
    typer.echo(f"{len(result.rejects)} rejected -> {rejected_path(Path(out))}")
    for reason, count in sorted(result.reasons.items(), key=lambda item: -item[1]):
        typer.echo(f"  {count} x {reason}")


# Further `tuneforge data` commands live in their own modules (this one stays short); importing registers them.
from tuneforge.cli import data_fairness, data_labeling  # noqa: E402,F401
