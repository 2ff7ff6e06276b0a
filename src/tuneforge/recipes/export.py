"""The one export step: adapter folder, merged model and GGUF files of a trained run, used at the end of
`tuneforge train` and by `tuneforge export RUN` (which first rebuilds the trained model from the run directory).

    tuneforge export quickstart --out exported/contact-extractor
    tuneforge export quickstart --format gguf --quant f16 --quant q8_0

Every GGUF is written from the merged folder as saved on disk and checked in llama.cpp against it before it is
renamed into place (`tuneforge.export.gguf_check`); the manifest records each exported file's sha256, so
`tuneforge runs which FILE` finds the run, data and code behind a file.
"""
from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from tuneforge.errors import RunError

GGUF_DIR = "gguf"


def export_trained(method, model, tokenizer, *, adapter_dir: Path | None, merged_dir: Path | None, lineage: dict,
                   console: Console) -> dict:
    """Save the adapter (when the method has one and `adapter_dir` is given) and the merged model (when
    `merged_dir` is given and the method's adaptation can be folded into the weights); returns the manifest's
    `exports` record. A merge is only written after its logits were checked against the unmerged model's."""
    from tuneforge.export.merge import merge_and_save, save_adapter, save_merged

    exports: dict = {}
    if method.has_adapter and adapter_dir is not None:
        save_adapter(model, tokenizer, adapter_dir)
        exports["adapter"] = str(adapter_dir)
    if merged_dir is None:
        return exports
    if not method.can_merge:
        exports["merged_skipped"] = (f"method {method.name} adds learned inputs, not weight deltas: there is "
                                     "nothing to merge; serve the adapter on the base model")
        console.print(f"[yellow]merged export skipped:[/] {exports['merged_skipped']}")
    elif method.has_adapter:
        merged = merge_and_save(model, tokenizer, merged_dir, lineage, merge=method.merged_model)
        exports["merged"] = merged["path"]
        exports["merged_max_abs_logit_diff_vs_adapter"] = merged["max_abs_logit_diff_vs_adapter"]
    else:
        save_merged(method.merged_model(model), tokenizer, merged_dir, lineage)
        exports["merged"] = str(merged_dir)
    return exports


def export_run(run_ref: str, *, out: Path | None, runs_dir: Path, console: Console, formats=("merged",),
               quants=("q8_0",), verify: bool = True) -> dict:
    """Export a finished run: `merged` rebuilds its trained model and merges it (into `out` or RUN/merged);
    `gguf` converts the merged folder (merged first when there is none) into `out` or RUN/gguf. The manifest
    records every exported file with its sha256."""
    from tuneforge.config.loader import load_config
    from tuneforge.runs.rundir import open_run

    if str(run_ref).startswith("registry:"):  # a registry version is exported from the run that produced it
        from tuneforge.models.ref import parse_model_ref
        from tuneforge.registry.release import resolve_model_ref

        run_ref = resolve_model_ref(parse_model_ref(str(run_ref)), runs_dir=runs_dir).run_dir
    run_dir = open_run(run_ref, runs_dir)
    if not run_dir.config.is_file():
        raise RunError(f"{run_dir.path}: no config.yaml; this is not a finished tuneforge run")
    cfg = load_config(run_dir.config)
    exports: dict = {}
    want_gguf = "gguf" in formats
    merged_dir = (out or run_dir.merged) if "merged" in formats else run_dir.merged
    if "merged" in formats or not (merged_dir / "config.json").is_file():
        exports.update(_rebuild_and_merge(run_dir, cfg, merged_dir, console))
    gguf_dir = out if (out is not None and "merged" not in formats) else run_dir.path / GGUF_DIR
    if want_gguf:
        exports["gguf"] = export_gguf(merged_dir, gguf_dir, list(quants), provenance=provenance(run_dir, cfg),
                                      items=verification_items(cfg), console=console, verify=verify)
    if "gguf-lora" in formats:
        exports["gguf_lora"] = export_lora_gguf(run_dir, cfg, gguf_dir, console=console, verify=verify)
    return record_exports(run_dir, exports)


def export_lora_gguf(run_dir, cfg, out_dir: Path, *, console: Console, verify: bool = True) -> dict:
    """The run's LoRA adapter as a GGUF adapter plus the f16 GGUF of its base, checked together in llama.cpp
    (base + `lora_path`) against the HF base with the PEFT adapter: identical greedy tokens."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.atomic import atomic_path
    from tuneforge.export.gguf import GGUFExportError, write_gguf
    from tuneforge.export.gguf_lora import write_lora_gguf
    from tuneforge.hashing import sha256_file
    from tuneforge.models.sources import resolve_model

    if cfg.method.name != "lora":
        raise GGUFExportError(f"method {cfg.method.name}: only plain LoRA adapters (on full-precision weights) have "
                              "a llama.cpp adapter form", hint="export the merged model as GGUF (--format gguf)")
    source = (run_dir.read_manifest().get("base_model") or {}).get("source")
    base_path = resolve_model(source).path
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    meta = provenance(run_dir, cfg)
    items = verification_items(cfg)
    base_file, adapter_file = Path(out_dir) / "base-f16.gguf", Path(out_dir) / "adapter-lora.gguf"
    with atomic_path(base_file) as base_tmp, atomic_path(adapter_file) as adapter_tmp:
        write_gguf(base, tokenizer, base_tmp, "f16", {**meta, "run": None, "role": "base"})
        info = write_lora_gguf(run_dir.adapter, base.config, adapter_tmp, meta)
        checks = None
        if verify:
            from tuneforge.export.gguf_check import check_generation
            from tuneforge.models.inference import InferenceEngine
            from tuneforge.models.llamacpp import LlamaCppModel

            tuned = PeftModel.from_pretrained(base, str(run_dir.adapter)).eval()
            llama = LlamaCppModel(base_tmp, lora_path=str(adapter_tmp))
            prompts = [InferenceEngine(tuned, tokenizer).prompt_ids(item) for item in items[:8]]
            try:
                checks = {"generation": check_generation(llama, tuned, tokenizer, prompts, "f16", 64)}
            except GGUFExportError as exc:
                raise GGUFExportError(f"{adapter_file.name} refused, no file written: {exc.message}") from None
    console.print(f"[green]gguf lora[/] {adapter_file} on {base_file}"
                  + (f": {checks['generation']['identical']}/{checks['generation']['prompts']} greedy answers "
                     "identical to the PEFT model" if checks else ""))
    return {"adapter": {"path": str(adapter_file), "sha256": sha256_file(adapter_file),
                        "bytes": adapter_file.stat().st_size, **info},
            "base": {"path": str(base_file), "sha256": sha256_file(base_file), "bytes": base_file.stat().st_size},
            "checks": checks}


def provenance(run_dir, cfg) -> dict:
    """What a GGUF carries about its origin (tuneforge.* metadata keys) and the base model's license."""
    from tuneforge import __version__
    from tuneforge.hashing import sha256_file
    from tuneforge.models.catalog import base_license

    base = run_dir.read_manifest().get("base_model") or {}
    return {"tuneforge_version": __version__, "run": run_dir.name, "base_model": base.get("source"),
            "base_weights_sha256": base.get("weights_sha256"),
            "config_sha256": sha256_file(run_dir.config) if run_dir.config.is_file() else None,
            "license": base_license(base.get("source"))}


def _rebuild_and_merge(run_dir, cfg, merged_dir: Path, console: Console) -> dict:
    """Rebuild a finished run's trained model (its base, shaped by its objective, with its adapter) and merge it."""
    from peft import PeftModel

    from tuneforge.methods import get_method
    from tuneforge.models.loading import load_tokenizer
    from tuneforge.models.sources import resolve_model
    from tuneforge.objectives import get_objective

    source = (run_dir.read_manifest().get("base_model") or {}).get("source")
    if not source:
        raise RunError(f"{run_dir.path}: no base_model in manifest.json; cannot rebuild the merge")
    method = get_method(cfg.method)
    if not method.can_merge:
        raise RunError(f"run {run_dir.name} used method {method.name}, which learns inputs rather than weight "
                       "deltas: there is nothing to merge", hint=f"serve {run_dir.adapter} on the base model")
    if not (run_dir.adapter / "adapter_config.json").is_file():
        raise RunError(f"{run_dir.adapter}: no adapter_config.json; this run has no PEFT adapter to merge")
    resolved = resolve_model(source)
    tokenizer = load_tokenizer(resolved, cfg.model.chat_template_path)
    # The run's own method loads the base (QLoRA: the same 4-bit weights it trained on); the objective shapes it
    # as in training (reward: the backbone under a score head).
    base = get_objective(cfg.objective).prepare_model(method.load_base(resolved, cfg.model.dtype))
    model = PeftModel.from_pretrained(base, str(run_dir.adapter))
    lineage = {"run": run_dir.name, "base_model": source, "base_weights_sha256": resolved.weights_sha256}
    return export_trained(method, model, tokenizer, adapter_dir=None, merged_dir=merged_dir,
                          lineage=lineage, console=console)


# ------------------------------------------------------------------------------------------------ GGUF
def gguf_path(folder: Path, quant: str) -> Path:
    return Path(folder) / f"model-{quant}.gguf"


def verification_items(cfg, limit: int = 200) -> list[dict]:
    """The run's own prompts for the llama.cpp round trip: its test split, else validation, else train (chat or
    prompt/completion rows); none (the built-in probes are used) for data that has no single answer per prompt."""
    from tuneforge.errors import DataError
    from tuneforge.eval.tasks import items_from_dataset

    for path in (cfg.data.test, cfg.data.validation, cfg.data.train):
        if not path:
            continue
        try:
            return items_from_dataset(path, max_items=limit)
        except (DataError, KeyError, TypeError, ValueError):
            continue
    return []


def export_gguf(merged_dir: Path, out_dir: Path, quants, *, provenance: dict, items: list[dict], console: Console,
                verify: bool = True) -> dict:
    """Write `out_dir/model-<quant>.gguf` for each quant from the merged folder; each file is checked in llama.cpp
    (tokens, chat template, generation, stop) while still a temp file, and refused (deleted) if a check fails."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.atomic import atomic_path
    from tuneforge.export.gguf import (
        QUANTS,
        GGUFExportError,
        check_architecture,
        write_gguf,
    )
    from tuneforge.hashing import sha256_file

    unknown = [q for q in quants if q not in QUANTS]
    if unknown:
        raise GGUFExportError(f"--quant {', '.join(unknown)}: choose from {', '.join(QUANTS)}")
    if not (Path(merged_dir) / "config.json").is_file():
        raise RunError(f"{merged_dir}: no merged model to convert", hint="export the merged model first")
    from transformers import AutoConfig

    check_architecture(AutoConfig.from_pretrained(merged_dir))  # refuse before loading any weights
    if verify:
        from tuneforge.models.llamacpp import import_llama_cpp

        import_llama_cpp()  # a missing llama.cpp is reported before minutes of writing
    model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    records = {}
    for quant in quants:
        final = gguf_path(out_dir, quant)
        with atomic_path(final) as tmp:
            write_gguf(model, tokenizer, tmp, quant, provenance)
            checks = None
            if verify:
                from tuneforge.export.gguf_check import verify_gguf

                try:
                    checks = verify_gguf(tmp, model, tokenizer, quant, items=items)
                except GGUFExportError as exc:
                    raise GGUFExportError(f"{final.name} refused, no file written: {exc.message}",
                                          hint=exc.hint) from None
        generation = (checks or {}).get("generation", {})
        records[quant] = {"path": str(final), "sha256": sha256_file(final), "bytes": final.stat().st_size,
                          "verified": bool(verify), "checks": checks}
        console.print(f"[green]gguf[/] {final} ({final.stat().st_size / 2**20:.1f} MiB)"
                      + (f"; llama.cpp round trip: {checks['tokens']['equal']} strings tokenised alike, "
                         f"{generation['identical']}/{generation['prompts']} greedy answers identical, top-1 "
                         f"agreement {generation['top1_agreement']:.2%}" if checks else "; not verified"))
    return records


def file_hashes(*paths) -> dict:
    """sha256 of every file under the given folders/files (relative to the run dir when inside it)."""
    from tuneforge.hashing import sha256_file

    out = {}
    for root in paths:
        if root is None or not Path(root).exists():
            continue
        files = [Path(root)] if Path(root).is_file() else sorted(p for p in Path(root).rglob("*") if p.is_file())
        for file in files:
            out[str(file)] = sha256_file(file)
    return out


def record_exports(run_dir, exports: dict, *, card: bool = True) -> dict:
    """Merge `exports` into the run's manifest with the sha256 of every exported file and of the resolved config;
    first write the model card (README.md) into each exported model folder."""
    from tuneforge.hashing import sha256_file

    manifest = run_dir.read_manifest()
    merged = dict(manifest.get("exports") or {})
    gguf = dict(merged.get("gguf") or {})
    gguf.update(exports.pop("gguf", {}) or {})
    merged.update(exports)
    if gguf:
        merged["gguf"] = gguf
    if card:
        from tuneforge.export.card import write_card

        folders = {Path(merged[k]) for k in ("merged", "adapter") if merged.get(k)}
        folders |= {Path(g["path"]).parent for g in gguf.values()}
        gates = run_dir.eval_dir / "gates.json"
        for folder in sorted(folders):
            if folder.is_dir():
                write_card(run_dir, folder, exports=merged,
                           gates=json.loads(gates.read_text()) if gates.is_file() else None)
    lora = merged.get("gguf_lora") or {}
    files = file_hashes(merged.get("adapter"), merged.get("merged"), *[g["path"] for g in gguf.values()],
                        *[rec["path"] for rec in lora.values() if isinstance(rec, dict) and rec.get("path")])
    lineage = {"files": {str(Path(k).resolve()): v for k, v in files.items()}}
    if run_dir.config.is_file():
        lineage["config_sha256"] = sha256_file(run_dir.config)
    run_dir.update_manifest(exports=merged, export_lineage=lineage)
    return merged
