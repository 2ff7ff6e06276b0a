"""`tuneforge registry dossier NAME VERSION --out DIR`: the release dossier of one version, as plain files.

    DIR/model_card.md      what it is, how it scored, how it was made, how to roll it back
    DIR/config.yaml        the run's resolved config (as written by the run)
    DIR/lineage.json       content hash, artifact files with sha256, base model, data sha256s, config hash, commit
    DIR/eval/results.json  the registered results;  DIR/eval/gates.json  every gate decision on this version
    DIR/resources.json     train time, steps, tokens, throughput, peak memory (when recorded), hardware
    DIR/licenses.json      base model and data licenses ("unknown" when the run did not record them)
    DIR/rollback.md        the version this one replaces and the command that restores it
    DIR/dossier.json       index: every file above with its sha256

The folder is written whole or not at all (tuneforge.atomic.atomic_dir).
"""
from __future__ import annotations

import json
from pathlib import Path

from tuneforge.atomic import atomic_dir, write_json_atomic, write_text_atomic
from tuneforge.registry.changelog import PRODUCTION, baseline, metric_deltas
from tuneforge.registry.store import RegistryError, Store, Version, now_iso


def _licenses(version: Version) -> dict:
    recorded = version.lineage.get("licenses") or {}
    data = {split: (recorded.get("data") or {}).get(split, "unknown")
            for split in (version.lineage.get("datasets") or {})}
    return {"base_model": {"source": version.base.get("source"), "license": recorded.get("base_model", "unknown")},
            "data": data,
            "note": None if recorded else "the run recorded no licenses; check the base model's and datasets' terms"}


def _summary_table(results: dict | None) -> list[str]:
    models = (results or {}).get("models") or {}
    tuned = (models.get("tuned") or {}).get("summary") or {}
    if not tuned:
        return ["No evaluation results were registered."]
    base = (models.get("base") or {}).get("summary") or {}
    comparison = (results or {}).get("comparison") or {}
    lines = ["| metric | base | tuned | delta (95% CI) |", "|---|---|---|---|"]
    for metric, value in tuned.items():
        if not isinstance(value, (int, float)):
            continue
        comp = comparison.get(metric)
        delta = f"{comp['delta']:+.4f} [{comp['ci_low']:+.4f}, {comp['ci_high']:+.4f}]" if comp else "-"
        b = base.get(metric)
        lines.append(f"| {metric} | {'-' if b is None else f'{b:.4f}'} | {value:.4f} | {delta} |")
    return lines


def write_dossier(store: Store, name: str, version_ref: str, out: Path) -> Path:
    version = store.lookup(name, version_ref)
    events = store.events(name)
    gates = [{"event": e.id, "at": e.at, "alias": e.alias, "action": e.action, "actor": e.actor, "reason": e.reason,
              "gates": e.gates or []} for e in events
             if e.to_version == version.version and e.action in ("promote", "refused")]
    replaces, why = baseline(version, events, PRODUCTION)
    lineage = {"model": name, "version": version.version, "content_hash": version.content_hash,
               "kind": version.kind, "artifacts": version.artifacts, "base_model": version.base,
               **{k: v for k, v in version.lineage.items() if k not in ("config", "resources", "hardware")}}
    lineage_res = version.lineage.get("resources") or {}
    resources = {**lineage_res, "hardware": version.lineage.get("hardware") or {},
                 "peak_memory": lineage_res.get("peak_memory") or "not recorded"}
    aliases = [a for a, v in store.aliases(name).items() if v == version.version]

    rollback_lines = [f"# Rollback plan for {name} v{version.version}", ""]
    if replaces is not None:
        rollback_lines += [f"This version replaces **v{replaces}** ({why}).", "",
                           "If it misbehaves in production, move the alias back:", "",
                           f"    tuneforge registry rollback {name} --alias {PRODUCTION}", "",
                           (f"(or pin it explicitly: `tuneforge registry promote {name} {replaces} --to {PRODUCTION} "
                            "--gates GATES`). Servers following the alias pick the change up without a restart.")]
    else:
        rollback_lines += [(f"There is no earlier {PRODUCTION} version ({why}): rolling back means taking the "
                            "alias out of service, not restoring an older model.")]

    comparison_lines: list[str] = []
    if replaces is not None:
        try:
            old = store.version(name, replaces)
            rows = metric_deltas(old.results, version.results)
            comparison_lines = [f"## Against v{replaces}", "", "| metric | delta | 95% CI |", "|---|---|---|"] + [
                f"| {r['metric']} | {r['delta']:+.4f} | "
                + (f"[{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}]" if r["ci"] else "-") + " |" for r in rows] + [""]
        except RegistryError:  # a missing old version only drops this table
            comparison_lines = []
    code = version.lineage.get("code") or {}
    card = [
        f"# {name} v{version.version}", "",
        f"- kind: {version.kind} "
        f"({'adapter on ' + str(version.base.get('source')) if version.kind == 'adapter' else 'merged weights'})",
        f"- content sha256: `{version.content_hash}`",
        f"- aliases: {', '.join(aliases) or 'none'}" + (" - DEPRECATED" if version.deprecated_at else ""),
        f"- trained by run `{version.lineage.get('run')}` ({version.lineage.get('method')} / "
        f"{version.lineage.get('objective')}), commit `{code.get('commit') or 'unknown'}`"
        + (" (dirty tree)" if code.get("dirty") else ""),
        f"- registered {version.registered_at} by {version.registered_by}"
        + (f": {version.note}" if version.note else ""), "",
        "## Evaluation", "", *_summary_table(version.results), "",
        *comparison_lines,
        "## Data", "",
        *[f"- {split}: `{entry.get('sha256')}` ({entry.get('rows')} rows, {entry.get('path')})"
          for split, entry in (version.lineage.get("datasets") or {}).items()], "",
        "## Gates", "",
        *([f"- {g['at']} {g['action']} `{g['alias']}`: " + ", ".join(
            f"{'pass' if x['passed'] else 'FAIL'} {x['line']}" for x in g["gates"]) for g in gates]
          or ["- not yet gated"]), "",
        "## Rollback", "", *rollback_lines[2:], "",
        "## Licenses", "", f"- base model: {_licenses(version)['base_model']['license']}",
        *[f"- data {s}: {lic}" for s, lic in _licenses(version)["data"].items()], "",
    ]

    out = Path(out)
    with atomic_dir(out) as tmp:
        write_text_atomic(tmp / "model_card.md", "\n".join(card))
        config_file = Path(version.lineage.get("config_file") or "")
        if config_file.is_file():
            write_text_atomic(tmp / "config.yaml", config_file.read_text(encoding="utf-8"))
        elif version.lineage.get("config") is not None:
            import yaml

            write_text_atomic(tmp / "config.yaml", yaml.safe_dump(version.lineage["config"], sort_keys=False))
        write_json_atomic(tmp / "lineage.json", lineage)
        if version.results is not None:
            write_json_atomic(tmp / "eval" / "results.json", version.results)
        write_json_atomic(tmp / "eval" / "gates.json", gates)
        write_json_atomic(tmp / "resources.json", resources)
        write_json_atomic(tmp / "licenses.json", _licenses(version))
        write_text_atomic(tmp / "rollback.md", "\n".join(rollback_lines) + "\n")
        from tuneforge.hashing import sha256_file

        files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        write_json_atomic(tmp / "dossier.json", {"model": name, "version": version.version, "written_at": now_iso(),
                                                 "replaces": replaces, "files": files})
    return out


def load_index(out: Path) -> dict:
    return json.loads((Path(out) / "dossier.json").read_text(encoding="utf-8"))
