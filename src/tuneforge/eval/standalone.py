"""`tuneforge eval`: evaluate a model - a run, an adapter folder, a merged folder, anything `resolve_model` takes,
or an OpenAI-compatible endpoint - on a dataset or a task YAML, plus the release checks beyond the task metric
(forgetting, contamination, safety probes, LLM judge), and optionally compare it with a second model.

Every model answers the same items as chat messages and renders them with its own chat template, so a base model,
a tuned model and an endpoint are compared on the same questions even when their tokenizers differ.

The results layout is the one evaluation pipeline's (`tuneforge.eval.pipeline`), shared with training runs.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from tuneforge.errors import ConfigError
from tuneforge.eval import pipeline, registry


@dataclass
class EvalOptions:
    model: str | None
    data: str | None = None
    task: str | None = None
    base: str | None = None
    metrics: list[str] | None = None
    slice_field: str | None = None
    max_new_tokens: int = 64
    batch_size: int = 16
    batch_tokens: int | None = None
    max_items: int | None = None
    out: Path | None = None
    runs_dir: Path = Path("runs")
    seed: int = 0
    adapter_base: str | None = None
    endpoint: str | None = None
    endpoint_model: str | None = None
    api_key_env: str | None = None
    concurrency: int = 4
    timeout: float = 60.0
    retries: int = 3
    general: bool = False
    general_data: str | None = None
    probes: bool = False
    probes_data: str | None = None
    train_data: str | None = None
    ngram: int = 13
    judge_endpoint: str | None = None
    judge_models: list[str] = field(default_factory=list)
    judge_mode: str = "pointwise"
    judge_rubric: str | None = None
    engine: str = "transformers"
    cohort_field: str | None = None
    counterfactual: str | None = None  # a swap file, or "default" for the shipped list
    # What the user typed where it names a model indirectly (`registry:NAME@ALIAS`): results record it as the
    # side's source, and the model it resolved to under `<side>_resolved`, so a result stays traceable to both.
    references: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------- models
def make_model(ref_text: str, opts: EvalOptions):
    """(model, the run's base reference or None, the run directory or None) for a model reference."""
    from tuneforge.eval.endpoint import EndpointModel, api_key_from_env
    from tuneforge.models.inference import InferenceEngine
    from tuneforge.models.ref import parse_model_ref

    ref = parse_model_ref(ref_text, runs_dir=opts.runs_dir, adapter_base=opts.adapter_base,
                          endpoint_url=opts.endpoint)
    if ref.kind == "endpoint":
        return EndpointModel(ref.url, ref.name, api_key_from_env(opts.api_key_env), opts.concurrency, opts.timeout,
                             opts.retries), None, None
    if opts.engine not in ("transformers", "llamacpp"):
        raise ConfigError(f"--engine {opts.engine!r}: use transformers or llamacpp")
    if ref.kind == "gguf" and opts.engine == "llamacpp":
        # The file as llama.cpp/Ollama run it (its tokenizer, template and quantised kernels), not dequantised.
        from tuneforge.models.llamacpp import LlamaCppModel

        return LlamaCppModel(ref.path, name=ref.source), None, None
    base = ref.base.source if ref.kind == "run" and ref.base else None
    engine = InferenceEngine.from_ref(ref)
    engine.batch_tokens = opts.batch_tokens
    return engine, base, Path(ref.run_dir) if ref.run_dir else None


# ------------------------------------------------------------------------------------------------- the command
def _task_items(opts: EvalOptions) -> tuple[list[dict], list[str], list[str] | None, str, int, dict | None]:
    from tuneforge.eval.tasks import items_from_dataset, items_from_task, load_task

    if opts.task:
        spec = load_task(opts.task)
        opts.cohort_field = spec.cohort_field = opts.cohort_field or spec.cohort_field
        items = items_from_task(spec, opts.task)
        metrics = opts.metrics or spec.metrics
        if spec.kind == "code":
            if opts.metrics:
                raise ConfigError("--metric: a code task is scored with the pass@k metrics its YAML names")
            code = {"samples": spec.samples, "timeout_s": spec.timeout_s}
            return items, metrics, None, spec.name, spec.max_new_tokens or opts.max_new_tokens, code
        if opts.metrics and registry.split_metrics(opts.metrics)[1] and not spec.labels:
            raise ConfigError(f"--metric {','.join(opts.metrics)}: label metrics need a task with labels")
        return items, metrics, spec.labels, spec.name, spec.max_new_tokens or opts.max_new_tokens, None
    if opts.data:
        items = items_from_dataset(opts.data, slice_field=opts.slice_field, cohort_field=opts.cohort_field)
        metrics = opts.metrics or registry.default_metrics([i["reference"] for i in items])
        if registry.split_metrics(metrics)[1]:
            raise ConfigError(f"--metric {','.join(metrics)}: label metrics need a task YAML with 'labels:'")
        return items, metrics, None, Path(opts.data).stem, opts.max_new_tokens, None
    return [], [], None, "checks", opts.max_new_tokens, None


def evaluate_command(opts: EvalOptions, console: Console,
                     write_report: Callable[[dict, Path], Path] | None = None) -> dict:
    """Evaluate, write results.json (and, through `write_report`, the HTML report: the report layer sits above eval
    and is passed in by the CLI rather than imported here) and print the summary; returns the results."""
    from tuneforge.atomic import write_json_atomic
    from tuneforge.eval.forgetting import general_items
    from tuneforge.eval.probes import load_probes
    from tuneforge.eval.slices import RESERVED

    if opts.metrics:
        opts.metrics = registry.expand(opts.metrics)
    if opts.data and opts.task:
        raise ConfigError("pass either --data or --task, not both")
    if not (opts.data or opts.task or opts.general or opts.probes):
        raise ConfigError("nothing to evaluate", hint="pass --data FILE, --task YAML, --general and/or --probes")
    if opts.endpoint and not opts.endpoint_model and not (opts.model or "").startswith("endpoint:"):
        raise ConfigError("--endpoint needs --endpoint-model NAME (or MODEL written as endpoint:NAME)")

    items, metrics, labels, task_name, max_new_tokens, code = _task_items(opts)
    if opts.max_items is not None:
        items = items[:opts.max_items]
    clash = sorted({i["slice"] for i in items} & set(RESERVED) - {None})
    if clash and (opts.general or opts.probes):
        raise ConfigError(f"slice name(s) {clash} are reserved for the built-in checks; rename them in the data")
    general = general_items(opts.general_data) if (opts.general or opts.general_data) else []
    probes = []
    if opts.probes or opts.probes_data:
        probes = load_probes() + (load_probes(opts.probes_data) if opts.probes_data else [])
        ids = [p["id"] for p in probes]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"{opts.probes_data}: probe ids repeat ids of the shipped suite; choose others")

    swaps = None
    if opts.counterfactual:
        from tuneforge.data.fairness.swaps import load_swaps

        if code is not None or not items:
            raise ConfigError("--counterfactual asks the task items again with swapped terms",
                              hint="pass --data or a text/label --task (not a code task)")
        swaps = load_swaps(opts.counterfactual)  # before minutes of generation
    if opts.cohort_field and not items:
        raise ConfigError("--cohort-field disaggregates task items", hint="pass --data or --task")

    judges = None
    if opts.judge_endpoint or opts.judge_models:
        from tuneforge.eval.endpoint import api_key_from_env
        from tuneforge.eval.judge import prepare_judges

        if not items:
            raise ConfigError("the judge rates task answers", hint="pass --data or --task with --judge-*")
        judges = prepare_judges(opts, api_key_from_env(opts.api_key_env))  # before minutes of generation

    model_ref = opts.model or (f"endpoint:{opts.endpoint_model}" if opts.endpoint else None)
    if not model_ref:
        raise ConfigError("no model to evaluate", hint="pass MODEL, or --endpoint URL --endpoint-model NAME")
    tuned_model, run_base, run_dir = make_model(model_ref, opts)
    base_ref = opts.base or run_base
    console.print(f"evaluating {tuned_model.name} on {len(items)} task items"
                  + (f", {len(general)} general items" if general else "")
                  + (f", {len(probes)} safety probes" if probes else ""))
    common = dict(metrics=metrics, labels=labels, max_new_tokens=max_new_tokens, batch_size=opts.batch_size,
                  general=general, probes=probes, code=code, cohort_field=opts.cohort_field,
                  counterfactual=swaps, seed=opts.seed)
    sides = {"tuned": pipeline.evaluate_side(tuned_model, "tuned", items, **common)}
    engine_info = _engine_info(tuned_model)
    if base_ref:
        del tuned_model  # one model in memory at a time
        base_model, _, _ = make_model(base_ref, opts)
        sides["base"] = pipeline.evaluate_side(base_model, "base", items, **common)
    notes: list[str] = []
    if labels and any(s["label_report"] and s["label_report"].get("calibration") is None for s in sides.values()):
        notes.append("calibration unavailable for endpoint models (no label-token probabilities)")

    judge, judge_error = None, None
    if judges:
        from tuneforge.errors import TuneforgeError
        from tuneforge.eval.judge import run_judges

        # The judge may be a local model: one model in memory at a time.
        if "base" in sides:
            del base_model
        else:
            del tuned_model
        try:
            judge = run_judges(opts, items, sides, judges)
        except (TuneforgeError, OSError, RuntimeError, ValueError) as exc:
            # The answers cost minutes to generate: save them with the judge marked failed instead of losing them.
            judge_error = exc
            judge = {"mode": opts.judge_mode, "judges": [j.model for j in judges], "status": "failed",
                     "error": f"{type(exc).__name__}: {getattr(exc, 'message', exc)}", "summary": {}}
            for side in sides.values():
                for record in side["per_item"]:
                    record.pop("judge", None)
                    record["scores"].pop("judge_score", None)
        else:
            judge["status"] = "ok"
        for name, side in sides.items():
            side["summary"].update(judge["summary"].get(name, {}))

    extra = (registry.group("general") if general else []) + (registry.group("probes") if probes else [])
    if swaps is not None:
        extra.append("counterfactual_flip_rate")
    if judge and judge["status"] == "ok" and judge["mode"] == "pointwise":
        extra.append("judge_score")
    comparison = (pipeline.compare_sides(sides["base"], sides["tuned"], metrics + extra, seed=opts.seed,
                                         labels=labels, items=items) if "base" in sides else {})

    contamination = None
    if opts.train_data:
        from tuneforge.eval.contamination import check_contamination

        contamination = check_contamination(items + general, opts.train_data, n=opts.ngram)
        for side in sides.values():
            side["summary"]["contamination_rate"] = contamination["contamination_rate"]
        if contamination["n_flagged"]:
            notes.append(f"{contamination['n_flagged']} evaluation item(s) overlap the training data; see "
                         "'contamination' (they are kept in the scores)")

    sources = {"tuned": sides["tuned"]["source"], "base": sides.get("base", {}).get("source")}
    for side, typed in opts.references.items():
        sources[f"{side}_resolved"], sources[side] = sources.get(side), typed
    sources |= {"data": opts.data, "task": opts.task, "general": bool(general), "probes": bool(probes),
                "train_data": opts.train_data}
    results = pipeline.assemble_results(task_name, metrics + extra, items + general + probes, sides, comparison,
                                        notes, sources, contamination=contamination, judge=judge)
    _mark_contamination(results, contamination)
    if engine_info:
        results["engine"] = engine_info
    out = opts.out or ((run_dir / "eval" / "standalone") if run_dir else Path("eval-results"))
    write_json_atomic(out / "results.json", results)
    pipeline.print_summary(results, console)
    if write_report is not None:
        console.print(f"report:  {write_report(results, out / 'report.html')}")
    console.print(f"results: {out / 'results.json'}")
    if judge_error is not None:
        from tuneforge.errors import TuneforgeError

        raise TuneforgeError(f"the judge failed after generation: {judge['error']}",
                             hint=f"the answers and every other score are saved in {out / 'results.json'} "
                                  "(judge.status: failed)") from judge_error
    return results


def _mark_contamination(results: dict, contamination: dict | None) -> None:
    flagged = (contamination or {}).get("items", {})
    for row in results["items"]:
        if row["id"] in flagged:
            row["contamination"] = flagged[row["id"]]


def _engine_info(model) -> dict | None:
    """File size and generation speed of a llama.cpp model (what a quantised export costs and buys)."""
    path = getattr(model, "path", None)
    if path is None or not hasattr(model, "tokens_per_second"):
        return None
    return {"engine": "llamacpp", "file": str(path), "file_bytes": Path(path).stat().st_size,
            "generated_tokens": model.generated_tokens, "tokens_per_second": model.tokens_per_second}
