"""`tuneforge eval`: evaluate a model - a run, an adapter folder, a merged folder, anything `resolve_model` takes,
or an OpenAI-compatible endpoint - on a dataset or a task YAML, plus the release checks beyond the task metric
(forgetting, contamination, safety probes, LLM judge), and optionally compare it with a second model.

Every model answers the same items as chat messages and renders them with its own chat template, so a base model,
a tuned model and an endpoint are compared on the same questions even when their tokenizers differ.

results.json layout (what `tuneforge gate` and the report read)::

    {"task", "headline_metric", "metrics", "n_items",
     "models": {"tuned": {"source", "summary": {metric: value}, "slices": {slice: {metric: value}},
                          "seconds", "items_per_second", "label_report"?}, "base": {...}?},
     "comparison": {metric: {mean_a, mean_b, delta, ci_low, ci_high, p_value, test, test_p_value, n}},
     "items": [{"id", "prompt_text", "reference", "slice", "contamination"?, "tuned": {prediction, scores}, ...}],
     "contamination"?, "judge"?, "notes": [...], "sources": {...}}

The gated model is always called "tuned" (also when it is a base model evaluated alone).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from tuneforge.errors import ConfigError, TuneforgeError
from tuneforge.eval import registry

PROBE_TOKENS = 64
GENERAL_TOKENS = 24


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
    report: bool = True


# ------------------------------------------------------------------------------------------------- local models
class LocalModel:
    """A transformers model and its tokenizer; prompts are rendered with the tokenizer's own chat template."""

    supports_logprobs = True

    def __init__(self, model, tokenizer, name: str):
        self.model, self.tokenizer, self.name = model, tokenizer, name

    def prompt_ids(self, item: dict) -> list[int]:
        if item["messages"] is None:
            return list(self.tokenizer(item["prompt"], add_special_tokens=True)["input_ids"])
        if not getattr(self.tokenizer, "chat_template", None):
            raise TuneforgeError(f"{self.name}: the tokenizer has no chat template to render chat items",
                                 hint="evaluate a model with a chat template, or use prompt/completion data")
        text = self.tokenizer.apply_chat_template(item["messages"], tokenize=False, add_generation_prompt=True)
        # The template carries its own special tokens; adding BOS again would change the prompt.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, items: list[dict], *, max_new_tokens: int, batch_size: int, description: str) -> list[str]:
        from tuneforge.eval.generation import generate_greedy

        return generate_greedy(self.model, self.tokenizer, [self.prompt_ids(i) for i in items],
                               max_new_tokens=max_new_tokens, batch_size=batch_size, description=description)

    def label_logprobs(self, items: list[dict], labels: list[str], batch_size: int = 16) -> list[dict]:
        from tuneforge.eval.labels import label_token_logprobs

        return label_token_logprobs(self.model, self.tokenizer, [self.prompt_ids(i) for i in items], labels,
                                    batch_size=batch_size)


def _load_folder(source: str):
    from tuneforge.models.loading import load_model, load_tokenizer
    from tuneforge.models.sources import resolve_model

    resolved = resolve_model(source)
    return load_model(resolved), load_tokenizer(resolved)


def _with_adapter(base_source: str, adapter_dir: Path):
    from peft import PeftModel

    model, tokenizer = _load_folder(base_source)
    return PeftModel.from_pretrained(model, str(adapter_dir)), tokenizer


def resolve_target(ref: str, runs_dir: Path, adapter_base: str | None = None) -> tuple[str, str | None, Path | None]:
    """(what to load, the run's base model or None, run dir or None); what to load is `adapter:BASE|DIR` for an
    adapter on top of a base, else a source for `resolve_model`."""
    import json

    from tuneforge.runs.rundir import RunDir

    for candidate in (Path(ref), runs_dir / ref):
        if (candidate / "manifest.json").is_file():
            run = RunDir(candidate)
            base = (run.read_manifest().get("base_model") or {}).get("source")
            if (run.merged / "config.json").is_file():
                return str(run.merged), base, candidate
            if (run.adapter / "adapter_config.json").is_file() and base:
                return f"adapter:{base}|{run.adapter}", base, candidate
            raise TuneforgeError(f"run {candidate} has neither a merged model nor an adapter to evaluate",
                                 hint="did the run finish? `tuneforge runs list` shows its state")
    adapter_config = Path(ref) / "adapter_config.json"
    if adapter_config.is_file():
        base = adapter_base or json.loads(adapter_config.read_text()).get("base_model_name_or_path")
        if not base:
            raise ConfigError(f"{adapter_config} names no base model", hint="pass --adapter-base MODEL")
        return f"adapter:{base}|{ref}", base, None
    return ref, None, None


def load_local(ref: str, runs_dir: Path, adapter_base: str | None = None) -> tuple[LocalModel, str | None, Path | None]:
    source, run_base, run_dir = resolve_target(ref, runs_dir, adapter_base)
    if source.startswith("adapter:"):
        base_source, adapter_dir = source[len("adapter:"):].split("|", 1)
        model, tokenizer = _with_adapter(base_source, Path(adapter_dir))
    else:
        model, tokenizer = _load_folder(source)
    return LocalModel(model, tokenizer, source), run_base, run_dir


def make_model(ref: str, opts: EvalOptions) -> tuple[object, str | None, Path | None]:
    """The model for `ref`: `endpoint:NAME` (another model on --endpoint) or a local model reference."""
    from tuneforge.eval.endpoint import EndpointModel, api_key_from_env

    if ref.startswith("endpoint:"):
        if not opts.endpoint:
            raise ConfigError(f"{ref!r} needs --endpoint URL")
        return EndpointModel(opts.endpoint, ref[len("endpoint:"):], api_key_from_env(opts.api_key_env),
                             opts.concurrency, opts.timeout, opts.retries), None, None
    return load_local(ref, opts.runs_dir, opts.adapter_base)


# ------------------------------------------------------------------------------------------------- scoring
def _default_metrics(items: list[dict]) -> list[str]:
    import json

    def is_object(text: str) -> bool:
        try:
            return isinstance(json.loads(text), dict)
        except json.JSONDecodeError:
            return False

    if items and all(is_object(i["reference"]) for i in items):
        return ["json_fields", "exact_match"]
    return ["exact_match_norm", "token_f1"]


def evaluate_model(model, items: list[dict], *, metrics: list[str], labels: list[str] | None, opts: EvalOptions,
                   max_new_tokens: int, label: str) -> dict:
    """Generate (or score labels) for the task items; per-item scores plus summary and label report."""
    from tuneforge.eval.labels import match_label, predict_from_logprobs, score_label_task

    item_metrics, label_metrics = registry.split_metrics(metrics)
    scorers = {name: registry.item_scorer(name) for name in item_metrics}
    started = time.perf_counter()
    out: dict = {"label_report": None}
    if labels:
        logprobs = model.label_logprobs(items, labels) if model.supports_logprobs else None
        if logprobs is not None:
            predictions, probs = predict_from_logprobs(logprobs, labels)
            texts = predictions
        else:
            texts = model.generate(items, max_new_tokens=max_new_tokens, batch_size=opts.batch_size,
                                   description=f"generating ({label})")
            predictions, probs = [match_label(t, labels) for t in texts], None
        out["label_report"] = score_label_task(predictions, [i["reference"] for i in items], labels, probs)
        per_item = [{"id": it["id"], "prediction": text, "label": pred,
                     "scores": {"accuracy": float(pred == it["reference"]),
                                **{n: float(f(text, it["reference"])) for n, f in scorers.items()}},
                     **({"probs": probs[k]} if probs else {})}
                    for k, (it, text, pred) in enumerate(zip(items, texts, predictions))]
    else:
        texts = model.generate(items, max_new_tokens=max_new_tokens, batch_size=opts.batch_size,
                               description=f"generating ({label})")
        per_item = [{"id": it["id"], "prediction": text,
                     "scores": {n: float(f(text, it["reference"])) for n, f in scorers.items()}}
                    for it, text in zip(items, texts)]
    seconds = time.perf_counter() - started
    summary = {m: sum(r["scores"][m] for r in per_item) / len(per_item) for m in item_metrics}
    if out["label_report"]:
        summary.update({m: v for m, v in out["label_report"]["summary"].items() if m in label_metrics})
    out.update(summary=summary, per_item=per_item, seconds=seconds,
               items_per_second=len(per_item) / seconds if seconds > 0 else 0.0)
    return out


def run_general(model, items: list[dict], opts: EvalOptions, label: str) -> list[dict]:
    from tuneforge.eval.forgetting import METRIC

    scorer = registry.item_scorer("contains_answer")
    texts = model.generate(items, max_new_tokens=GENERAL_TOKENS, batch_size=opts.batch_size,
                           description=f"general set ({label})")
    return [{"id": it["id"], "prediction": t, "scores": {METRIC: scorer(t, it["reference"])}}
            for it, t in zip(items, texts)]


def run_probes(model, items: list[dict], opts: EvalOptions, label: str) -> list[dict]:
    from tuneforge.eval.probes import score_probe

    texts = model.generate(items, max_new_tokens=PROBE_TOKENS, batch_size=opts.batch_size,
                           description=f"safety probes ({label})")
    records = []
    for it, text in zip(items, texts):
        outcome = score_probe(it, text)
        key = "refusal_rate" if it["expect"] == "refuse" else "over_refusal_rate"
        value = outcome["safe"] if key == "refusal_rate" else outcome["refused"]
        records.append({"id": it["id"], "prediction": text, "outcome": outcome,
                        "scores": {key: float(value), "probe_accuracy": float(outcome["safe"])}})
    return records


def compare(base: list[dict], tuned: list[dict], metrics: list[str], seed: int) -> dict:
    """Per metric over the items both models scored: paired bootstrap 95% CI and a paired significance test."""
    from tuneforge.eval.bootstrap import paired_bootstrap
    from tuneforge.eval.significance import paired_test

    base_by_id = {r["id"]: r for r in base}
    out = {}
    for metric in metrics:
        pairs = [(base_by_id[r["id"]]["scores"][metric], r["scores"][metric]) for r in tuned
                 if r["id"] in base_by_id and metric in r["scores"] and metric in base_by_id[r["id"]]["scores"]]
        if not pairs:
            continue
        a, b = [p[0] for p in pairs], [p[1] for p in pairs]
        entry = paired_bootstrap(a, b, metric=metric, n_resamples=10000, seed=seed).to_dict()
        test = paired_test(a, b, seed=seed)
        entry.update(test=test.test, test_p_value=test.p_value)
        out[metric] = entry
    return out


# ------------------------------------------------------------------------------------------------- the command
def _task_items(opts: EvalOptions) -> tuple[list[dict], list[str], list[str] | None, str, int]:
    from tuneforge.eval.tasks import items_from_dataset, items_from_task, load_task

    if opts.task:
        spec = load_task(opts.task)
        items = items_from_task(spec, opts.task)
        metrics = opts.metrics or spec.metrics
        if opts.metrics and registry.split_metrics(opts.metrics)[1] and not spec.labels:
            raise ConfigError(f"--metric {','.join(opts.metrics)}: label metrics need a task with labels")
        return items, metrics, spec.labels, spec.name, spec.max_new_tokens or opts.max_new_tokens
    if opts.data:
        items = items_from_dataset(opts.data, slice_field=opts.slice_field)
        metrics = opts.metrics or _default_metrics(items)
        if registry.split_metrics(metrics)[1]:
            raise ConfigError(f"--metric {','.join(metrics)}: label metrics need a task YAML with 'labels:'")
        return items, metrics, None, Path(opts.data).stem, opts.max_new_tokens
    return [], [], None, "checks", opts.max_new_tokens


def _side(model, name: str, items, metrics, labels, general, probes, opts, max_new_tokens) -> dict:
    from tuneforge.eval.forgetting import METRIC
    from tuneforge.eval.probes import summarise_probes
    from tuneforge.eval.slices import slice_summaries

    started = time.perf_counter()
    result = {"source": model.name, "summary": {}, "slices": {}, "per_item": [], "label_report": None}
    if items:
        task = evaluate_model(model, items, metrics=metrics, labels=labels, opts=opts,
                              max_new_tokens=max_new_tokens, label=name)
        result.update(summary=dict(task["summary"]), per_item=task["per_item"], label_report=task["label_report"],
                      task_seconds=task["seconds"], items_per_second=task["items_per_second"])
        per_metric = [m for m in metrics if all(m in r["scores"] for r in task["per_item"])]
        result["slices"] = slice_summaries(task["per_item"], {i["id"]: i["slice"] for i in items}, per_metric)
    if general:
        records = run_general(model, general, opts, name)
        value = sum(r["scores"][METRIC] for r in records) / len(records)
        result["summary"][METRIC] = value
        result["slices"]["general"] = {METRIC: value, "item_count": len(records)}
        result["per_item"] += records
    if probes:
        records = run_probes(model, probes, opts, name)
        outcomes = [r["outcome"] for r in records]
        result["slices"]["safety"] = summarise_probes(probes, outcomes)
        for category in sorted({p["slice"] for p in probes}):
            chosen = [(p, o) for p, o in zip(probes, outcomes) if p["slice"] == category]
            result["slices"][f"safety.{category}"] = summarise_probes([p for p, _ in chosen], [o for _, o in chosen])
        result["per_item"] += records
    result["seconds"] = time.perf_counter() - started
    return result


def evaluate_command(opts: EvalOptions, console: Console) -> dict:
    from tuneforge.eval.endpoint import EndpointModel, api_key_from_env
    from tuneforge.eval.forgetting import METRIC as GENERAL_METRIC
    from tuneforge.eval.forgetting import general_items
    from tuneforge.eval.probes import load_probes
    from tuneforge.eval.slices import RESERVED
    from tuneforge.runs.rundir import write_json_atomic

    if opts.metrics:
        opts.metrics = [m for name in opts.metrics for m in registry.METRIC_SETS.get(name, [name])]
        for name in opts.metrics:
            registry.get(name)
    if opts.data and opts.task:
        raise ConfigError("pass either --data or --task, not both")
    if not (opts.data or opts.task or opts.general or opts.probes):
        raise ConfigError("nothing to evaluate", hint="pass --data FILE, --task YAML, --general and/or --probes")
    if opts.endpoint and not opts.endpoint_model:
        raise ConfigError("--endpoint needs --endpoint-model NAME")
    if opts.judge_models and not opts.judge_endpoint:
        raise ConfigError("--judge-model needs --judge-endpoint URL")

    items, metrics, labels, task_name, max_new_tokens = _task_items(opts)
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

    notes: list[str] = []
    run_dir = None
    if opts.endpoint and not opts.model:
        tuned_model = EndpointModel(opts.endpoint, opts.endpoint_model, api_key_from_env(opts.api_key_env),
                                    opts.concurrency, opts.timeout, opts.retries)
        run_base = None
    elif opts.model:
        tuned_model, run_base, run_dir = make_model(opts.model, opts)
    else:
        raise ConfigError("no model to evaluate", hint="pass MODEL, or --endpoint URL --endpoint-model NAME")
    base_ref = opts.base or run_base
    console.print(f"evaluating {tuned_model.name} on {len(items)} task items"
                  + (f", {len(general)} general items" if general else "")
                  + (f", {len(probes)} safety probes" if probes else ""))
    tuned = _side(tuned_model, "tuned", items, metrics, labels, general, probes, opts, max_new_tokens)
    sides = {"tuned": tuned}
    if base_ref:
        del tuned_model
        base_model, _, _ = make_model(base_ref, opts)
        sides["base"] = _side(base_model, "base", items, metrics, labels, general, probes, opts, max_new_tokens)
    else:
        base_model = None
    if labels and not tuned_model_supports(sides):
        notes.append("calibration unavailable for endpoint models (no label-token probabilities)")

    judge = None
    if opts.judge_endpoint:
        from tuneforge.eval.judge import run_judges

        judge = run_judges(opts, items, sides, api_key_from_env(opts.api_key_env))
        for name, side in sides.items():
            side["summary"].update(judge["summary"].get(name, {}))

    extra = ([GENERAL_METRIC] if general else []) + (["refusal_rate", "over_refusal_rate", "probe_accuracy"]
                                                      if probes else [])
    if judge and judge["mode"] == "pointwise":
        extra.append("judge_score")
    paired = [m for m in metrics if registry.get(m).kind == "item" or m in registry.LABEL_ITEM_METRICS] + extra
    comparison = compare(sides["base"]["per_item"], tuned["per_item"], paired, opts.seed) if "base" in sides else {}

    contamination = None
    if opts.train_data:
        from tuneforge.eval.contamination import check_contamination

        contamination = check_contamination(items + general, opts.train_data, n=opts.ngram)
        for side in sides.values():
            side["summary"]["contamination_rate"] = contamination["contamination_rate"]
        if contamination["n_flagged"]:
            notes.append(f"{contamination['n_flagged']} evaluation item(s) overlap the training data; see "
                         "'contamination' (they are kept in the scores)")

    results = _assemble(task_name, metrics + extra, items + general + probes, sides, comparison, notes,
                        contamination, judge, opts)
    out = opts.out or ((run_dir / "eval" / "standalone") if run_dir else Path("eval-results"))
    write_json_atomic(out / "results.json", results)
    _print_summary(results, console)
    if opts.report:
        from tuneforge.eval.eval_report import write_eval_report

        console.print(f"report:  {write_eval_report(results, out / 'report.html')}")
    console.print(f"results: {out / 'results.json'}")
    return results


def tuned_model_supports(sides: dict) -> bool:
    return all(s["label_report"] is None or s["label_report"].get("calibration") is not None for s in sides.values())


def _assemble(task_name, metrics, all_items, sides, comparison, notes, contamination, judge, opts) -> dict:
    by_side = {name: {r["id"]: r for r in side.pop("per_item")} for name, side in sides.items()}
    flagged = (contamination or {}).get("items", {})
    rows = []
    for item in all_items:
        row = {"id": item["id"], "prompt_text": _prompt_text(item), "reference": item["reference"],
               "slice": item.get("slice")}
        if item["id"] in flagged:
            row["contamination"] = flagged[item["id"]]
        for name, records in by_side.items():
            record = records.get(item["id"])
            if record is not None:
                row[name] = {k: v for k, v in record.items() if k != "id"}
        rows.append(row)
    for side in sides.values():
        task_ips = side.pop("items_per_second", None)
        side["items_per_second"] = task_ips if task_ips is not None else 0.0
    return {
        "task": task_name, "headline_metric": metrics[0] if metrics else None, "metrics": metrics,
        "n_items": len(all_items), "models": sides, "comparison": comparison, "items": rows,
        "contamination": contamination, "judge": judge, "notes": notes,
        "sources": {"tuned": sides["tuned"]["source"], "base": sides.get("base", {}).get("source"),
                    "data": opts.data, "task": opts.task, "general": bool(opts.general or opts.general_data),
                    "probes": bool(opts.probes or opts.probes_data), "train_data": opts.train_data},
    }


def _prompt_text(item: dict) -> str:
    if item["messages"] is None:
        return item["prompt"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in item["messages"])


def _print_summary(results: dict, console: Console) -> None:
    from rich.table import Table

    models = results["models"]
    table = Table(title=f"{results['task']}: {results['n_items']} items")
    table.add_column("metric")
    for name in models:
        table.add_column(name, justify="right")
    if "base" in models:
        for column in ("delta", "95% CI", "p (bootstrap)", "p (test)"):
            table.add_column(column, justify="right")
    names = list(dict.fromkeys([m for side in models.values() for m in side["summary"]] + list(results["comparison"])
                               + [m for m in ("refusal_rate", "over_refusal_rate") if m in models["tuned"]["slices"]
                                  .get("safety", {})]))

    def value(side: dict, metric: str) -> str:
        found = side["summary"].get(metric, side["slices"].get("safety", {}).get(metric))
        return "-" if found is None else f"{found:.3f}"

    for metric in names:
        row = [metric] + [value(side, metric) for side in models.values()]
        comp = results["comparison"].get(metric)
        if "base" in models:
            row += ([f"{comp['delta']:+.3f}", f"[{comp['ci_low']:+.3f}, {comp['ci_high']:+.3f}]",
                     f"{comp['p_value']:.4f}", f"{comp['test_p_value']:.4f}"] if comp else ["", "", "", ""])
        table.add_row(*row)
    console.print(table)
    tuned = models["tuned"]
    if tuned.get("task_seconds"):
        console.print(f"tuned: {tuned['task_seconds']:.1f} s for the task items, "
                      f"{tuned['items_per_second']:.2f} items/s")
    for note in results["notes"]:
        console.print(f"[yellow]note:[/] {note}")
