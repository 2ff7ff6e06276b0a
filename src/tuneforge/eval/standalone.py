"""`tuneforge eval`: evaluate any model (a run, a folder, a .gguf, a catalog name, a hub id) on a test file,
and compare two models on the same items with a paired bootstrap."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console

from tuneforge.errors import TuneforgeError

METRIC_SETS = {"exact_match": ["exact_match"], "json_fields": ["json_fields"], "both": ["json_fields", "exact_match"]}


def _target(ref: str, runs_dir: Path) -> tuple[str, str | None, Path | None]:
    """(model source to evaluate, the run's base model source or None, run dir or None)."""
    from tuneforge.runs.rundir import RunDir

    for candidate in (Path(ref), runs_dir / ref):
        if (candidate / "manifest.json").is_file():
            run = RunDir(candidate)
            base = (run.read_manifest().get("base_model") or {}).get("source")
            if (run.merged / "config.json").is_file():
                return str(run.merged), base, candidate
            raise TuneforgeError(f"run {candidate} has no merged model to evaluate",
                                 hint=f"run `tuneforge export {candidate}` first")
    return ref, None, None


def _load(source: str):
    from tuneforge.models.loading import load_model, load_tokenizer
    from tuneforge.models.sources import resolve_model

    resolved = resolve_model(source)
    return load_model(resolved), load_tokenizer(resolved)


def evaluate_command(*, model: str, data: str, base: str | None, metric: str, max_new_tokens: int, batch_size: int,
                     max_items: int | None, out: Path | None, runs_dir: Path, seed: int, console: Console) -> dict:
    from tuneforge.data.formats import load_dataset_file
    from tuneforge.data.render import build_generation_prompt
    from tuneforge.eval.compare import build_results, compare_results, evaluate_items
    from tuneforge.runs.rundir import write_json_atomic
    from tuneforge.train.runner import print_comparison

    if metric not in METRIC_SETS:
        raise TuneforgeError(f"--metric {metric!r}: expected one of {', '.join(METRIC_SETS)}")
    metrics = METRIC_SETS[metric]
    source, run_base, run_dir = _target(model, runs_dir)
    base = base or run_base
    tuned_model, tokenizer = _load(source)
    loaded = load_dataset_file(data)
    count = len(loaded.rows) if max_items is None else min(max_items, len(loaded.rows))
    items = []
    for i in range(count):
        # Generation prompts use the tokenizer's own template: it is what a served model sees.
        prompt_ids, reference = build_generation_prompt(loaded.rows[i], tokenizer, None)
        items.append({"id": str(loaded.rows[i].get("meta", {}).get("id", loaded.where(i))),
                      "prompt_ids": prompt_ids, "reference": reference,
                      "prompt_text": tokenizer.decode(prompt_ids)})
    tuned = evaluate_items(tuned_model, tokenizer, items, metrics=metrics, max_new_tokens=max_new_tokens,
                           batch_size=batch_size, label="model")
    del tuned_model
    out = out or ((run_dir / "eval" / "standalone") if run_dir else Path("eval-results"))
    if base:
        base_model, base_tokenizer = _load(base)
        if base_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise TuneforgeError(f"{base} and {source} use different tokenizers; items would not be the same prompts")
        base_result = evaluate_items(base_model, tokenizer, items, metrics=metrics, max_new_tokens=max_new_tokens,
                                     batch_size=batch_size, label="base")
        comparison = compare_results(base_result, tuned, metrics=metrics, n_resamples=10000, seed=seed)
        results = build_results(base_result, tuned, items, metrics=metrics, comparison=comparison)
        results["sources"] = {"base": base, "tuned": source, "data": str(loaded.path), "data_sha256": loaded.sha256}
        print_comparison(results, console)
    else:
        results = {"metrics": metrics, "n_items": len(items),
                   "models": {"tuned": {"summary": tuned["summary"], "seconds": tuned["seconds"],
                                        "items_per_second": tuned["items_per_second"]}},
                   "items": [{"id": it["id"], "reference": it["reference"], "tuned": rec}
                             for it, rec in zip(items, tuned["per_item"])],
                   "sources": {"tuned": source, "data": str(loaded.path), "data_sha256": loaded.sha256}}
        console.print(", ".join(f"{k} {v:.3f}" for k, v in tuned["summary"].items()) + f" on {len(items)} items")
    write_json_atomic(out / "results.json", results)
    console.print(f"results: {out / 'results.json'}")
    return results
