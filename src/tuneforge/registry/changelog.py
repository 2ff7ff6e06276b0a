"""`tuneforge registry changelog NAME`: every version of a model with what changed against the production version
it was meant to replace: metric deltas (paired bootstrap CI when both were scored on the same items), gate
outcomes, safety/forgetting numbers, and the data and config changes between the two runs.
"""
from __future__ import annotations

from tuneforge.registry.store import Event, Store, Version

PRODUCTION = "production"
SAFETY_HINTS = ("refusal", "safety", "general", "forgetting", "toxic", "pii")


def baseline(version: Version, events: list[Event], alias: str = PRODUCTION) -> tuple[int | None, str]:
    """(the version `version` is compared with, why): the alias target just before its first promotion to
    `alias`; if it was never promoted there, the alias's current target."""
    current = None
    for event in events:
        if event.alias != alias or event.action not in ("promote", "rollback"):
            continue
        if event.action == "promote" and event.to_version == version.version:
            if event.from_version is None:
                return None, f"no {alias} version before v{version.version}"
            return event.from_version, f"{alias} before v{version.version} was promoted"
        current = event.to_version
    if current is not None and current != version.version:
        return current, f"{alias} now"
    return None, f"no other {alias} version"


def _tuned(results: dict | None) -> dict:
    return ((results or {}).get("models") or {}).get("tuned") or {}


def _item_scores(results: dict | None) -> dict[str, tuple[str, dict]]:
    """{item id: (prompt + reference, {metric: score})} for the gated (tuned) model."""
    out = {}
    for row in (results or {}).get("items") or []:
        scores = (row.get("tuned") or {}).get("scores")
        if isinstance(scores, dict):
            out[row["id"]] = (f"{row.get('prompt_text')}\x00{row.get('reference')}", scores)
    return out


def metric_deltas(old: dict | None, new: dict | None, *, n_resamples: int = 2000, seed: int = 0) -> list[dict]:
    """Per metric both summaries hold: old, new, delta and, when both scored the same items, a paired bootstrap CI."""
    from tuneforge.eval.bootstrap import paired_bootstrap

    a_sum, b_sum = _tuned(old).get("summary") or {}, _tuned(new).get("summary") or {}
    a_items, b_items = _item_scores(old), _item_scores(new)
    rows = []
    for metric in [m for m in b_sum if m in a_sum]:
        a, b = a_sum[metric], b_sum[metric]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
            continue
        row = {"metric": metric, "old": float(a), "new": float(b), "delta": float(b) - float(a), "ci": None, "n": None,
               "no_ci": "no per-item scores"}
        # Same items = same id, prompt and reference on both sides; otherwise a paired CI would pair strangers.
        shared = [i for i in b_items if i in a_items and a_items[i][0] == b_items[i][0]
                  and metric in a_items[i][1] and metric in b_items[i][1]]
        if any(metric in scores for _, scores in b_items.values()):
            row["no_ci"] = "not the same items"
        if shared and len(shared) == len(b_items) == len(a_items):
            result = paired_bootstrap([a_items[i][1][metric] for i in shared], [b_items[i][1][metric] for i in shared],
                                      metric=metric, n_resamples=n_resamples, seed=seed)
            row.update(ci=(result.ci_low, result.ci_high), n=result.n, delta=result.delta, p_value=result.p_value)
        rows.append(row)
    return rows


def flatten(value, prefix: str = "") -> dict:
    """Nested config objects as dotted keys (training.learning_rate), for diffs and tracking params."""
    if isinstance(value, dict):
        out = {}
        for key, sub in value.items():
            out.update(flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def lineage_changes(old: Version, new: Version) -> dict:
    """Dataset sha256 changes per split, config keys that differ, base model and code commit changes."""
    a_data, b_data = old.lineage.get("datasets") or {}, new.lineage.get("datasets") or {}
    data = [{"split": s, "old": (a_data.get(s) or {}).get("sha256"), "new": (b_data.get(s) or {}).get("sha256"),
             "old_rows": (a_data.get(s) or {}).get("rows"), "new_rows": (b_data.get(s) or {}).get("rows")}
            for s in sorted(set(a_data) | set(b_data))
            if (a_data.get(s) or {}).get("sha256") != (b_data.get(s) or {}).get("sha256")]
    a_cfg, b_cfg = flatten(old.lineage.get("config") or {}), flatten(new.lineage.get("config") or {})
    config = [{"key": k, "old": a_cfg.get(k), "new": b_cfg.get(k)} for k in sorted(set(a_cfg) | set(b_cfg))
              if a_cfg.get(k) != b_cfg.get(k)]

    def commit(v):
        return (v.lineage.get("code") or {}).get("commit")

    return {"data": data, "config": config,
            "base": None if old.base.get("weights_sha256") == new.base.get("weights_sha256")
            else {"old": old.base.get("source"), "new": new.base.get("source")},
            "code": None if commit(old) == commit(new) else {"old": commit(old), "new": commit(new)}}


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _gate_lines(version: Version, events: list[Event]) -> list[str]:
    lines = []
    for event in events:
        if event.to_version != version.version or event.action not in ("promote", "refused"):
            continue
        verdict = "promoted to" if event.action == "promote" else "REFUSED for"
        lines.append(f"- {event.at}: {verdict} `{event.alias}` by {event.actor}"
                     + (f": {event.reason}" if event.action == "refused" else ""))
        lines += [f"  - {'pass' if g['passed'] else 'FAIL'} `{g['line']}`: {g['reason']}" for g in event.gates or []]
        if event.action == "promote" and not event.gates:
            lines.append("  - no gates were given")
    return lines or ["- never proposed for an alias"]


def version_section(store: Store, version: Version, events: list[Event], versions: dict[int, Version]) -> list[str]:
    aliases = [a for a, v in store.aliases(version.model).items() if v == version.version]
    commit = (version.lineage.get("code") or {})
    out = [f"## v{version.version}" + (f" ({', '.join(aliases)})" if aliases else "")
           + (" - DEPRECATED" if version.deprecated_at else ""), "",
           f"- registered {version.registered_at} by {version.registered_by}" + (f": {version.note}" if version.note
                                                                                  else ""),
           f"- {version.kind}, content sha256 `{version.content_hash[:16]}`, run `{version.lineage.get('run')}`, "
           f"commit `{(commit.get('commit') or 'unknown')[:12]}`" + (" (dirty)" if commit.get("dirty") else "")]
    if version.deprecated_at:
        out.append(f"- deprecated {version.deprecated_at} by {version.deprecated_by}: "
                   f"{version.deprecated_reason or 'no reason given'}")
    base_no, why = baseline(version, events)
    out += ["", "### Gates", "", *_gate_lines(version, events), ""]
    if not version.results:
        out += ["No evaluation results were registered with this version.", ""]
    if base_no is None or base_no not in versions:
        out += [f"Nothing to compare with ({why}).", ""]
        return out
    old = versions[base_no]
    out += [f"### Against v{base_no} ({why})", ""]
    rows = metric_deltas(old.results, version.results)
    if rows:
        out += [f"| metric | v{base_no} | v{version.version} | delta | 95% CI | items |", "|---|---|---|---|---|---|"]
        for r in rows:
            ci = f"[{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}]" if r["ci"] else f"- ({r['no_ci']})"
            out.append(f"| {r['metric']} | {r['old']:.4f} | {r['new']:.4f} | {r['delta']:+.4f} | {ci} | "
                       f"{r['n'] or '-'} |")
        out.append("")
    safety = [r for r in rows if any(h in r["metric"] for h in SAFETY_HINTS)]
    slices = (_tuned(version.results).get("slices") or {}).get("safety") or {}
    if safety or slices:
        out.append("Safety / forgetting: " + "; ".join(
            [f"{r['metric']} {r['delta']:+.4f}" for r in safety] + [f"{m} {v:.4f} on safety probes"
                                                                     for m, v in slices.items()
                                                                     if isinstance(v, (int, float))]))
        out.append("")
    changes = lineage_changes(old, version)
    out += ["### What changed", ""]
    for d in changes["data"]:
        out.append(f"- data `{d['split']}`: sha256 `{(d['old'] or 'none')[:12]}` ({d['old_rows']} rows) -> "
                   f"`{(d['new'] or 'none')[:12]}` ({d['new_rows']} rows)")
    for c in changes["config"]:
        out.append(f"- config `{c['key']}`: {_fmt(c['old'])} -> {_fmt(c['new'])}")
    if changes["base"]:
        out.append(f"- base model: {changes['base']['old']} -> {changes['base']['new']}")
    if changes["code"]:
        out.append(f"- code commit: {str(changes['code']['old'])[:12]} -> {str(changes['code']['new'])[:12]}")
    if not any(changes.values()):
        out.append("- same data, config, base model and code")
    return out + [""]


def changelog(store: Store, name: str) -> str:
    versions = {v.version: v for v in store.versions(name)}
    if not versions:
        store.version(name, 1)  # raises the "no model named" error with its hint
    events = store.events(name)
    aliases = store.aliases(name)
    lines = [f"# {name}: change log", "",
             "Aliases now: " + (", ".join(f"`{a}` -> v{v}" for a, v in aliases.items()) or "none"), ""]
    for number in sorted(versions, reverse=True):
        lines += version_section(store, versions[number], events, versions)
    return "\n".join(lines).rstrip() + "\n"
