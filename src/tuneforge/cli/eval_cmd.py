"""`tuneforge eval`: evaluate a model or an endpoint on data or a task, with the release checks; parsing only."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from tuneforge.console import make_console


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def evaluate(
    model: str = typer.Argument(None, help="A run (dir or name), adapter folder, merged folder, .gguf, catalog name "
                                           "or hub id; leave out with --endpoint. With --against: the first "
                                           "saved results (A)."),
    data: str = typer.Option(None, "--data", help="Test data in any format the data commands read (chat, alpaca, "
                                                  "prompt/completion; quickstart:FILE works)."),
    task: str = typer.Option(None, "--task", help="Task YAML: prompt template, reference field, metrics, labels, "
                                                  "slice field (see examples/eval/)."),
    base: str = typer.Option(None, "--base", help="Second model to compare with (default for a run: its base); "
                                                  "endpoint:NAME for another model on --endpoint."),
    metric: list[str] = typer.Option(None, "--metric", help="Metric name(s), comma-separated or repeated "
                                                            "(--list-metrics shows them); 'both' = "
                                                            "json_fields,exact_match."),
    list_metrics: bool = typer.Option(False, "--list-metrics", help="Print every metric in the registry and exit."),
    slice_field: str = typer.Option(None, "--slice-field", help="Row field naming each item's slice (with --data)."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Generation budget per item (greedy)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Items generated together (local models)."),
    batch_tokens: int = typer.Option(None, "--batch-tokens", min=1, help="Also cap each generation batch at this many "
                                     "KV-cache positions (rows x (longest prompt + max new tokens)); local models."),
    max_items: int = typer.Option(None, "--max-items", help="Evaluate only the first N task items."),
    out: Path = typer.Option(None, "--out", help="Output folder for results.json and report.html "
                                                 "(default: RUN/eval/standalone for a run, else ./eval-results); "
                                                 "with --against, for comparison.json and comparison.html."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where run names are looked up."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap and permutation seed."),
    adapter_base: str = typer.Option(None, "--adapter-base", help="Base model for an adapter folder (default: the "
                                                                  "one its adapter_config.json names)."),
    endpoint: str = typer.Option(None, "--endpoint", help="OpenAI-compatible server URL (root, /v1 or full "
                                                          "chat-completions URL)."),
    endpoint_model: str = typer.Option(None, "--endpoint-model", help="Model name to request from --endpoint."),
    api_key_env: str = typer.Option(None, "--api-key-env", help="Environment variable holding the API key."),
    concurrency: int = typer.Option(4, "--concurrency", help="Endpoint requests in flight at once."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds per endpoint request."),
    retries: int = typer.Option(3, "--retries", help="Retries per endpoint request (429/5xx/timeouts), with backoff."),
    general: bool = typer.Option(False, "--general", help="Also run the shipped general-ability set (forgetting)."),
    general_data: str = typer.Option(None, "--general-data", help="Your own general set (id, question, answer)."),
    probes: bool = typer.Option(False, "--probes", help="Also run the shipped safety probes (refusal_rate on slice "
                                                        "safety)."),
    probes_data: str = typer.Option(None, "--probes-data", help="Extra probe JSONL, added to the shipped suite."),
    train_data: str = typer.Option(None, "--train-data", help="Training data to check the eval items against "
                                                              "(contamination)."),
    ngram: int = typer.Option(13, "--ngram", help="Word n-gram length for the contamination check."),
    judge_endpoint: str = typer.Option(None, "--judge-endpoint", help="OpenAI-compatible server of the judge model "
                                                                      "(checked with one request before generating)."),
    judge_model: list[str] = typer.Option(None, "--judge-model", help="Judge: a model name on --judge-endpoint, or "
                                                                      "without --judge-endpoint a local model (folder, "
                                                                      "run, catalog name) run by tuneforge; give two "
                                                                      "for inter-judge kappa."),
    judge_mode: str = typer.Option("pointwise", "--judge-mode", help="pointwise (1-10 rubric score) or pairwise "
                                                                     "(A/B/tie vs --base, both orders)."),
    judge_rubric: str = typer.Option(None, "--judge-rubric", help="Rubric text or a file holding it."),
    harness: str = typer.Option(None, "--harness", help="lm-evaluation-harness tasks, comma-separated: built-in "
                                                        "names (data from the hub or its cache) or your own task "
                                                        "YAML files / folders with local data (offline). Runs on "
                                                        "CUDA if present, else CPU. Needs tuneforge[harness]."),
    harness_limit: int = typer.Option(None, "--harness-limit", help="Items per harness task."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write report.html beside results.json "
                                                     "(comparison.html with --against)."),
    engine: str = typer.Option("transformers", "--engine", help="How a .gguf MODEL runs: transformers (dequantised "
                               "to float32) or llamacpp (the file itself in llama.cpp, as deployments run it)."),
    cohort_field: str = typer.Option(None, "--cohort-field", help="Fairness: row field naming each item's cohort; "
                                     "every metric per cohort with 95% CIs and the largest gap (gate "
                                     "cohort_gap:METRIC)."),
    counterfactual: str = typer.Option(None, "--counterfactual", help="Fairness: swap file (YAML 'pairs:', a list "
                                       "of two-term lists such as he, she) or 'default' (the shipped list); each "
                                       "item is asked again with the terms swapped; gate counterfactual_flip_rate."),
    human_sheet: Path = typer.Option(None, "--human-sheet", help="With MODEL = a results.json or run: write blinded "
                                     "base-vs-tuned sheets (sheet.csv, form.html, key.json) into this new folder."),
    human_n: int = typer.Option(50, "--n", help="Items sampled for --human-sheet."),
    human_results: list[Path] = typer.Option(None, "--human-results", help="With MODEL = the results.json: raters' "
                                             "filled sheets or form downloads (2-3); more files may follow as "
                                             "arguments. Writes results['human'] and human_win_rate."),
    human_key: Path = typer.Option(None, "--human-key", help="The sheet's key.json (default: beside a rating file)."),
    against: str = typer.Option(None, "--against", help="Run vs run, nothing generated: compare MODEL's saved "
                                "results (a run dir or name, a results.json or its folder, registry:NAME@ALIAS) with "
                                "these (same forms), paired by item id on every metric scored per item in both "
                                "(task, general set, probes); prints mean A, mean B, B - A with a 95% paired "
                                "bootstrap CI and a paired test, and writes comparison.json + comparison.html into "
                                "--out (default: beside A's results.json, compare-B/)."),
    more_files: list[Path] = typer.Argument(None, hidden=True, help="Further --human-results files."),
) -> None:
    """Evaluate a model or endpoint; with --base, compare two models item by item (bootstrap CI + paired test).

    Example: tuneforge eval runs/quickstart --data quickstart:test.jsonl --general --probes

    Human evaluation: tuneforge eval runs/quickstart --human-sheet sheets/ --n 50, then
    tuneforge eval runs/quickstart --human-results sheets/alice.csv sheets/bob.csv

    Run vs run (saved results, no generation): tuneforge eval runs/plain --against runs/l2sp
    """
    from tuneforge.errors import ConfigError
    from tuneforge.eval.standalone import EvalOptions, evaluate_command
    from tuneforge.integrations.quiet import quiet_third_party_output

    if list_metrics:
        _print_metrics()
        return
    if against:
        given = [flag for flag, value in (
            ("--data", data), ("--task", task), ("--base", base), ("--metric", metric), ("--general", general),
            ("--general-data", general_data), ("--probes", probes), ("--probes-data", probes_data),
            ("--train-data", train_data), ("--endpoint", endpoint), ("--judge-endpoint", judge_endpoint),
            ("--judge-model", judge_model), ("--harness", harness), ("--cohort-field", cohort_field),
            ("--counterfactual", counterfactual), ("--human-sheet", human_sheet), ("--human-results", human_results),
            ("extra arguments", more_files)) if value]
        if given:
            raise ConfigError(f"--against compares two saved results and generates nothing; {', '.join(given)} "
                              "do not apply", hint="evaluate each run first, then: tuneforge eval A --against B")
        _against(model, against, out, runs_dir, seed, report)
        return
    if more_files and not human_results:
        raise ConfigError(f"unexpected argument(s) {' '.join(map(str, more_files))}",
                          hint="only --human-results takes several files")
    if human_sheet or human_results:
        _human(model, human_sheet, human_n, [*(human_results or []), *(more_files or [])], human_key, seed, runs_dir)
        return
    quiet_third_party_output()
    console = make_console()
    if judge_mode not in ("pointwise", "pairwise"):
        raise ConfigError(f"--judge-mode {judge_mode!r}: use pointwise or pairwise")
    references = {side: text for side, text in (("tuned", model), ("base", base))
                  if text and text.startswith("registry:")}
    model, base = (_from_registry(ref, runs_dir) for ref in (model, base))
    opts = EvalOptions(
        model=model, data=data, task=task, base=base, metrics=_split(metric) or None, slice_field=slice_field,
        max_new_tokens=max_new_tokens, batch_size=batch_size, batch_tokens=batch_tokens, max_items=max_items,
        out=out, runs_dir=runs_dir,
        seed=seed, adapter_base=adapter_base, endpoint=endpoint, endpoint_model=endpoint_model,
        api_key_env=api_key_env, concurrency=concurrency, timeout=timeout, retries=retries, general=general,
        general_data=general_data, probes=probes, probes_data=probes_data, train_data=train_data, ngram=ngram,
        judge_endpoint=judge_endpoint, judge_models=_split(judge_model), judge_mode=judge_mode,
        judge_rubric=judge_rubric, engine=engine, references=references, cohort_field=cohort_field,
        counterfactual=counterfactual)
    if harness:
        _run_harness(opts, _split([harness]), harness_limit, console)
        if not (data or task or general or general_data or probes or probes_data):
            return
    from tuneforge.report.eval_report import write_eval_report

    evaluate_command(opts, console, write_report=write_eval_report if report else None)


def _human(source: str | None, sheet: Path | None, n: int, files: list[Path], key: Path | None, seed: int,
           runs_dir: Path) -> None:
    """The human-evaluation steps work on saved results, not on a model: no model is loaded."""
    from tuneforge.errors import ConfigError
    from tuneforge.eval.human.sheet import find_results

    if sheet and files:
        raise ConfigError("--human-sheet writes sheets, --human-results reads them back: one at a time")
    if not source:
        raise ConfigError("name the results: tuneforge eval RESULTS_OR_RUN --human-sheet DIR | --human-results FILES")
    console = make_console()
    path = find_results(source, runs_dir)
    if sheet:
        from tuneforge.eval.human.sheet import write_human_sheet

        written = write_human_sheet(path, sheet, n=n, seed=seed)
        console.print(f"{written['n']} items from {path}: {sheet / 'sheet.csv'}, {sheet / 'form.html'} (give these to "
                      f"the raters) and {sheet / 'key.json'} (keep it from them)")
        return
    from tuneforge.eval.human.results import merge_human_results

    results = merge_human_results(path, files, key, seed=seed)
    human = results["human"]
    win, tie = human["win_rate"], human["tie_rate"]
    console.print(f"{len(human['raters'])} rater(s), {human['n_items']} items: tuned win rate {win['mean']:.3f} "
                  f"[{win['ci_low']:.3f}, {win['ci_high']:.3f}] (a tie counts half), tie rate {tie['mean']:.3f}")
    agreement = human.get("agreement") or {}
    if agreement.get("fleiss_kappa") is not None:
        cohen = agreement.get("cohen_kappa")
        console.print(f"agreement on {agreement['n_items']} shared items: Fleiss' kappa "
                      f"{agreement['fleiss_kappa']:.3f}"
                      + (f", Cohen's kappa {cohen:.3f}" if cohen is not None else ""))
    if (path.parent / "report.html").is_file():
        from tuneforge.report.eval_report import write_eval_report

        write_eval_report(results, path.parent / "report.html")
    console.print(f"results: {path} (human, models.tuned.summary.human_win_rate)")


def _against(a: str | None, b: str, out: Path | None, runs_dir: Path, seed: int, report: bool) -> None:
    """`tuneforge eval A --against B`: both sides' saved results, paired by item id (tuneforge.eval.compare_runs)."""
    from tuneforge.atomic import write_json_atomic
    from tuneforge.errors import ConfigError
    from tuneforge.eval.compare_runs import compare_results, default_out, print_comparison
    from tuneforge.eval.human.sheet import find_results

    if not a:
        raise ConfigError("--against needs the first results too: tuneforge eval A --against B")
    path_a, path_b = (find_results(_from_registry(text, runs_dir), runs_dir) for text in (a, b))
    doc = compare_results(path_a, path_b, seed=seed)
    target = out or default_out(path_a, doc["b"]["label"])
    write_json_atomic(target / "comparison.json", doc)
    console = make_console()
    print_comparison(doc, console)
    if report:
        from tuneforge.report.compare_report import write_comparison_report

        console.print(f"report:     {write_comparison_report(doc, target / 'comparison.html')}")
    console.print(f"comparison: {target / 'comparison.json'}")


def _from_registry(text: str | None, runs_dir: Path) -> str | None:
    """`registry:NAME@ALIAS|VERSION` -> the run directory of that version, read from the registry now (the eval
    layer below the CLI knows model references, not the registry, which itself builds on eval's gates)."""
    if not text or not text.startswith("registry:"):
        return text
    from tuneforge.models.ref import parse_model_ref
    from tuneforge.registry.release import resolve_model_ref

    return resolve_model_ref(parse_model_ref(text, runs_dir=runs_dir), runs_dir=runs_dir).run_dir


def _print_metrics() -> None:
    from rich.table import Table

    from tuneforge.eval.registry import listing

    table = Table(title="metrics (tuneforge.eval.registry)")
    for column in ("name", "kind", "what it measures"):
        table.add_column(column)
    for row in listing():
        table.add_row(*row)
    make_console(stderr=False).print(table)


def _run_harness(opts, tasks: list[str], limit: int | None, console: Console) -> None:
    from tuneforge.atomic import write_json_atomic
    from tuneforge.errors import ConfigError
    from tuneforge.eval.harness import run_harness
    from tuneforge.models.ref import parse_model_ref
    from tuneforge.models.sources import resolve_model

    path = None
    if not opts.endpoint:
        if not opts.model:
            raise ConfigError("--harness needs MODEL or --endpoint")
        ref = parse_model_ref(opts.model, runs_dir=opts.runs_dir, adapter_base=opts.adapter_base)
        if ref.adapter_path or not ref.is_local:
            raise ConfigError("--harness runs on a merged model folder", hint="run `tuneforge export RUN` first")
        path = resolve_model(ref.model_path).path
    result = run_harness(tasks, model_path=path, endpoint=opts.endpoint, endpoint_model=opts.endpoint_model,
                         limit=limit, batch_size=opts.batch_size)
    target = (opts.out or Path("eval-results")) / "harness.json"
    write_json_atomic(target, result)
    for task, values in result["results"].items():
        shown = ", ".join(f"{k.split(',')[0]} {v:.4f}" for k, v in values.items()
                          if isinstance(v, (int, float)) and not isinstance(v, bool) and "stderr" not in k
                          and k != "sample_len")
        console.print(f"harness {task}: {shown} ({values.get('sample_len', '?')} items, {result['device']})")
    console.print(f"harness results: {target}")
