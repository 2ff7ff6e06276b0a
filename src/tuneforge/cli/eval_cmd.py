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
                                           "or hub id; leave out with --endpoint."),
    data: str = typer.Option(None, "--data", help="Test data in any format the data commands read (chat, alpaca, "
                                                  "prompt/completion; quickstart:FILE works)."),
    task: str = typer.Option(None, "--task", help="Task YAML: prompt template, reference field, metrics, labels, "
                                                  "slice field (see examples/eval/)."),
    base: str = typer.Option(None, "--base", help="Second model to compare with (default for a run: its base); "
                                                  "endpoint:NAME for another model on --endpoint."),
    metric: list[str] = typer.Option(None, "--metric", help="Metric name(s), comma-separated or repeated "
                                                            "(see tuneforge.eval.registry); 'both' = json_fields,exact_match."),
    slice_field: str = typer.Option(None, "--slice-field", help="Row field naming each item's slice (with --data)."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Generation budget per item (greedy)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Items generated together (local models)."),
    max_items: int = typer.Option(None, "--max-items", help="Evaluate only the first N task items."),
    out: Path = typer.Option(None, "--out", help="Output folder for results.json and report.html "
                                                 "(default: RUN/eval/standalone for a run, else ./eval-results)."),
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
    probes: bool = typer.Option(False, "--probes", help="Also run the shipped safety probes (refusal_rate on slice safety)."),
    probes_data: str = typer.Option(None, "--probes-data", help="Extra probe JSONL, added to the shipped suite."),
    train_data: str = typer.Option(None, "--train-data", help="Training data to check the eval items against "
                                                              "(contamination)."),
    ngram: int = typer.Option(13, "--ngram", help="Word n-gram length for the contamination check."),
    judge_endpoint: str = typer.Option(None, "--judge-endpoint", help="OpenAI-compatible server of the judge model."),
    judge_model: list[str] = typer.Option(None, "--judge-model", help="Judge model name; give two for inter-judge kappa."),
    judge_mode: str = typer.Option("pointwise", "--judge-mode", help="pointwise (1-10 rubric score) or pairwise "
                                                                     "(A/B/tie vs --base, both orders)."),
    judge_rubric: str = typer.Option(None, "--judge-rubric", help="Rubric text or a file holding it."),
    harness: str = typer.Option(None, "--harness", help="lm-evaluation-harness task names, comma-separated "
                                                        "(needs lm_eval installed)."),
    harness_limit: int = typer.Option(None, "--harness-limit", help="Items per harness task."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write report.html beside results.json."),
) -> None:
    """Evaluate a model or endpoint; with --base, compare two models item by item (bootstrap CI + paired test).

    Example: tuneforge eval runs/quickstart --data quickstart:test.jsonl --general --probes
    """
    from tuneforge.errors import ConfigError
    from tuneforge.eval.standalone import EvalOptions, evaluate_command
    from tuneforge.integrations.quiet import quiet_third_party_output

    quiet_third_party_output()
    console = make_console()
    if judge_mode not in ("pointwise", "pairwise"):
        raise ConfigError(f"--judge-mode {judge_mode!r}: use pointwise or pairwise")
    opts = EvalOptions(
        model=model, data=data, task=task, base=base, metrics=_split(metric) or None, slice_field=slice_field,
        max_new_tokens=max_new_tokens, batch_size=batch_size, max_items=max_items, out=out, runs_dir=runs_dir,
        seed=seed, adapter_base=adapter_base, endpoint=endpoint, endpoint_model=endpoint_model,
        api_key_env=api_key_env, concurrency=concurrency, timeout=timeout, retries=retries, general=general,
        general_data=general_data, probes=probes, probes_data=probes_data, train_data=train_data, ngram=ngram,
        judge_endpoint=judge_endpoint, judge_models=_split(judge_model), judge_mode=judge_mode,
        judge_rubric=judge_rubric, report=report)
    if harness:
        _run_harness(opts, _split([harness]), harness_limit, console)
        if not (data or task or general or general_data or probes or probes_data):
            return
    evaluate_command(opts, console)


def _run_harness(opts, tasks: list[str], limit: int | None, console: Console) -> None:
    from tuneforge.errors import ConfigError
    from tuneforge.eval.harness import run_harness
    from tuneforge.eval.standalone import resolve_target
    from tuneforge.runs.rundir import write_json_atomic

    path = None
    if not opts.endpoint:
        if not opts.model:
            raise ConfigError("--harness needs MODEL or --endpoint")
        path, _, _ = resolve_target(opts.model, opts.runs_dir, opts.adapter_base)
        if path.startswith("adapter:"):
            raise ConfigError("--harness runs on a merged model folder", hint="run `tuneforge export RUN` first")
        from tuneforge.models.sources import resolve_model

        path = resolve_model(path).path
    result = run_harness(tasks, model_path=path, endpoint=opts.endpoint, endpoint_model=opts.endpoint_model,
                         limit=limit, batch_size=opts.batch_size)
    target = (opts.out or Path("eval-results")) / "harness.json"
    write_json_atomic(target, result)
    console.print(f"harness results: {target}")
