"""Model card (README.md with Hugging Face front matter) and datasheets, generated from what the run recorded:
the manifest (lineage, data hashes, method, exports), config.yaml (hyperparameters, data licenses), eval/results.json
(base vs tuned with paired CIs, forgetting and safety when run), release gates and data audits when present.

Nothing in a card is typed by hand, so it cannot drift from the files it describes. Licenses: the base model's
(from the catalog, else `unknown`) and each dataset's (`data.license`, else `unknown`); a base or dataset license
that forbids derivatives, or limits their use, is flagged at the top of the card.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

#: Licenses under which a fine-tuned derivative may not be distributed at all, and ones that restrict its use.
FORBIDS_DERIVATIVES = ("cc-by-nd", "cc-by-nc-nd", "no-derivatives")
RESTRICTS_USE = ("cc-by-nc", "non-commercial", "research-only", "llama2", "llama3", "gemma", "openrail")


def chosen_settings(config: dict) -> dict:
    """method, objective and training as configured, without the option sections of the methods and objectives the
    run did not use (the resolved config carries every section's defaults: lora's card need not list dpo's beta)."""
    uses = {"qlora": {"lora", "qlora"}}  # QLoRA is LoRA on 4-bit weights: both sections apply
    out = {}
    for section in ("method", "objective"):
        values = config.get(section)
        if isinstance(values, dict):
            name = values.get("name")
            used = uses.get(name, {name})
            out[section] = {k: v for k, v in values.items() if k == "name" or k in used or not isinstance(v, dict)}
    if "training" in config:
        out["training"] = config["training"]
    return out


def license_flags(base_license: str | None, data_licenses: dict[str, str]) -> list[str]:
    flags = []
    named = [("base model", base_license or "unknown")] + [(f"dataset {k}", v) for k, v in data_licenses.items()]
    for what, value in named:
        low = value.lower()
        if any(tag in low for tag in FORBIDS_DERIVATIVES):
            flags.append(f"FORBIDDEN: the {what} license ({value}) does not allow distributing derivatives; "
                         "this export must not be published")
        elif any(tag in low for tag in RESTRICTS_USE):
            flags.append(f"RESTRICTED: the {what} license ({value}) limits how this model may be used")
        elif low == "unknown":
            flags.append(f"UNKNOWN: the {what} license is not recorded; check it before publishing")
    return flags


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _comparison_rows(results: dict) -> list[str]:
    rows = ["| metric | base | tuned | delta (95% CI) | p |", "|---|---|---|---|---|"]
    for metric, row in (results.get("comparison") or {}).items():
        p = row.get("p_value")
        rows.append(f"| {metric} | {row['mean_a']:.3f} | {row['mean_b']:.3f} | {row['delta']:+.3f} "
                    f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}] | {p:.3g} |" if p is not None else
                    f"| {metric} | {row['mean_a']:.3f} | {row['mean_b']:.3f} | {row['delta']:+.3f} "
                    f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}] | - |")
    return rows if len(rows) > 2 else ["(no base vs tuned comparison was recorded)"]


def _model_index(run_name: str, results: dict, datasets: dict) -> list[dict]:
    tuned = ((results.get("models") or {}).get("tuned") or {}).get("summary") or {}
    metrics = [{"type": name, "name": name, "value": round(float(value), 4)} for name, value in tuned.items()
               if isinstance(value, (int, float))]
    if not metrics:
        return []
    test = (datasets or {}).get("test") or {}
    return [{"name": run_name, "results": [{
        "task": {"type": "text-generation", "name": results.get("task") or "task"},
        "dataset": {"name": Path(str(test.get("path", results.get("task") or "test"))).name, "type": "custom",
                    "split": "test"},
        "metrics": metrics}]}]


def render_card(run_dir, *, exports: dict | None = None, gates: dict | list | None = None,
                audit: dict | None = None) -> str:
    from tuneforge.models.catalog import base_license

    manifest = run_dir.read_manifest()
    config = yaml.safe_load(run_dir.config.read_text()) if run_dir.config.is_file() else {}
    results = _read_json(run_dir.eval_dir / "results.json")
    exports = exports if exports is not None else (manifest.get("exports") or {})
    base = manifest.get("base_model") or {}
    datasets = manifest.get("datasets") or {}
    data_cfg = config.get("data") or {}
    data_license = data_cfg.get("license") or "unknown"
    data_licenses = {split: data_license for split in datasets} or {"train": data_license}
    base_lic = base_license(base.get("source")) or "unknown"
    method = (config.get("method") or {}).get("name", (manifest.get("method") or {}).get("name", "?"))
    tags = ["tuneforge", "fine-tuned", str(method), str((config.get("objective") or {}).get("name", "sft"))]
    if exports.get("gguf"):
        tags += ["gguf", *[f"gguf-{q}" for q in exports["gguf"]]]
    front = {"base_model": base.get("source"), "license": base_lic.lower(),
             "datasets": sorted({Path(str(info.get("path"))).name for info in datasets.values()}),
             "tags": tags, "library_name": "transformers",
             "model-index": _model_index(run_dir.name, results, datasets)}
    out = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip(), "---", "",
           f"# {run_dir.name}", ""]
    flags = license_flags(base_lic, data_licenses)
    out += [f"> **{flag}**" for flag in flags] + ([""] if flags else [])
    out += [(f"Fine-tuned from `{base.get('source')}` (weights sha256 `{base.get('weights_sha256')}`) with "
             f"tuneforge {manifest.get('tuneforge_version')} "
             f"(git {((manifest.get('git') or {}).get('commit') or '-')[:12]}), method **{method}**, objective "
             f"**{(config.get('objective') or {}).get('name', 'sft')}**."), "",
            "## Intended use", "",
            (f"The task of its training data ({', '.join(front['datasets']) or 'see below'}): answering prompts "
             "like the test items below. It was evaluated only on that task (and the general/safety checks listed "
             "when they were run); other uses are untested."), "",
            "## Evaluation: base vs tuned", "",
            f"{results.get('n_items', '?')} held-out items, paired bootstrap 95% confidence intervals.", "",
            *_comparison_rows(results), ""]
    gguf = exports.get("gguf") or {}
    if gguf:
        out += ["## Exported files", "", "| file | bytes | sha256 | llama.cpp round trip |", "|---|---|---|---|"]
        for rec in gguf.values():
            gen = ((rec.get("checks") or {}).get("generation") or {})
            verdict = (f"{gen.get('identical')}/{gen.get('prompts')} greedy answers identical, top-1 agreement "
                       f"{gen.get('top1_agreement')}" if gen else "not verified")
            out.append(f"| {Path(rec['path']).name} | {rec['bytes']} | `{rec['sha256'][:16]}...` | {verdict} |")
        out.append("")
    if gates:
        out += ["## Release gates", ""]
        for gate in gates if isinstance(gates, list) else gates.get("gates", []):
            out.append(f"- {'PASS' if gate.get('passed') else 'FAIL'}: {gate.get('line')} ({gate.get('reason')})")
        out.append("")
    training = manifest.get("training") or {}
    out += ["## Training", "", "```yaml", yaml.safe_dump(chosen_settings(config), sort_keys=False).strip(), "```", "",
            f"{training.get('steps', '?')} optimizer steps; final train loss {training.get('final_train_loss')}.", ""]
    out += ["## Datasheets", ""]
    for split, info in datasets.items():
        out += [f"### {split}: {Path(str(info.get('path'))).name}", "",
                f"- source: `{info.get('path')}`", f"- rows: {info.get('rows')}",
                f"- sha256: `{info.get('sha256')}`", f"- license: {data_licenses.get(split, 'unknown')}"]
        section = (audit or {}).get(split) if isinstance(audit, dict) else None
        if section:
            out.append(f"- audit: {json.dumps(section, default=str)[:400]}")
        else:
            out.append("- PII handling and duplicates: no data audit was recorded with this run "
                       "(`tuneforge data audit` writes one)")
        out.append("")
    out += ["## Limitations", "",
            ("- Scores hold for the evaluated test distribution only; the CIs above are sampling uncertainty of "
             "those items, not of other tasks."),
            "- Small base models hallucinate; check outputs that matter.", "",
            "## How to load", "",
            "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "model = AutoModelForCausalLM.from_pretrained('merged')  # the merged folder",
            "tokenizer = AutoTokenizer.from_pretrained('merged')", "```", "",
            "PEFT adapter: `PeftModel.from_pretrained(base_model, 'adapter')`.", ""]
    if gguf:
        name = Path(next(iter(gguf.values()))["path"]).name
        out += [f"llama.cpp: `llama-cli -m {name} -cnv` (chat template and end-of-turn token are in the file).", ""]
    out += [f"tuneforge server: `tuneforge serve runs/{run_dir.name}`.", "",
            (f"Lineage: `tuneforge runs which FILE` names this run ({run_dir.name}), its data and code for any "
             "exported file."), ""]
    return "\n".join(out)


def write_card(run_dir, folder: Path, **kwargs) -> Path:
    from tuneforge.atomic import write_text_atomic

    return write_text_atomic(Path(folder) / "README.md", render_card(run_dir, **kwargs))
