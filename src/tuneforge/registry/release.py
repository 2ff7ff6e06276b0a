"""The release flow over the store: register a run, promote a version through the gates, roll back, deprecate,
and resolve `registry:NAME@ALIAS|VERSION` to the artifact a loader can open.

Alias moves form a stack per alias: a promote pushes the new target, a rollback pops back to the target before it
(so two rollbacks after three promotions land on the first). Refusals are recorded but never move anything.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.errors import ConfigError
from tuneforge.registry.store import (
    Event,
    RegistryError,
    Store,
    Version,
    check_alias,
    check_name,
    current_user,
    default_db_path,
    now_iso,
)


class PromotionRefused(RegistryError):
    """A gate failed (or the version is deprecated / has no results to gate): the alias did not move."""

    exit_code = 1


@dataclass
class Promotion:
    version: Version
    alias: str
    moved: bool
    from_version: int | None
    gates: list[dict] = field(default_factory=list)
    event_id: int | None = None


def register(store: Store, run_ref: str | Path, name: str, *, runs_dir: str | Path = "runs", note: str | None = None,
             actor: str | None = None, kind: str | None = None) -> tuple[Version, bool]:
    """(the version, True when it is new). The same content under the same name is the existing version."""
    from tuneforge.registry.content import read_run

    check_name(name)
    record = read_run(run_ref, runs_dir, kind)  # hashing happens before the lock is taken
    with store.write() as conn:
        row = conn.execute("SELECT version FROM versions WHERE model = ? AND content_hash = ?",
                           (name, record["content_hash"])).fetchone()
        if row is not None:
            existing = row[0]
            created = False
        else:
            existing = conn.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE model = ?",
                                    (name,)).fetchone()[0]
            conn.execute(
                "INSERT INTO versions (model, version, content_hash, kind, run_dir, artifacts, base, lineage, "
                "results, registered_by, registered_at, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, existing, record["content_hash"], record["kind"], record["run_dir"],
                 json.dumps(record["artifacts"]), json.dumps(record["base"]), json.dumps(record["lineage"]),
                 json.dumps(record["results"]) if record["results"] is not None else None, actor or current_user(),
                 now_iso(), note))
            store.add_event(conn, name, "register", to_version=existing, actor=actor, reason=note)
            created = True
    return store.version(name, existing), created


def gate_outcomes(version: Version, gates_file: str | Path) -> list[dict]:
    """Run the gate file on the version's registered results (a bad gate file raises GateFileError, exit 2)."""
    from tuneforge.eval.gates import evaluate_gates, known_metric_names, load_gate_file

    if not version.results:
        return [{"line": str(gates_file), "passed": False, "actual": None,
                 "reason": f"FAILED (missing): {version.label} has no eval results (runs/<run>/eval/results.json "
                           "was absent when it was registered)"}]
    parsed = load_gate_file(gates_file, known_metrics=known_metric_names(version.results))
    return [{"line": o.line, "passed": o.passed, "actual": o.actual, "reason": o.reason}
            for o in evaluate_gates(version.results, parsed)]


def check_weight(weight: float | None) -> float | None:
    if weight is not None and not 0.0 <= weight <= 1.0:
        raise ConfigError(f"weight {weight}: give the share of traffic as a number from 0 to 1 (0.1 = 10%)")
    return weight


def promote(store: Store, name: str, version_ref: str | int, alias: str, *, gates_file: str | Path | None = None,
            actor: str | None = None, reason: str | None = None, weight: float | None = None) -> Promotion:
    """Point `alias` at the version when every gate passes; otherwise record the refusal and raise PromotionRefused.

    `weight` (0..1) is the share of the followed alias's traffic a server routes to this alias (a canary); it is
    kept across later moves until set again."""
    check_alias(alias)
    check_weight(weight)
    version = store.lookup(name, version_ref)
    gates = gate_outcomes(version, gates_file) if gates_file else []
    failed = [g for g in gates if not g["passed"]]
    refusal = None
    if version.deprecated_at:
        refusal = f"{version.label} is deprecated ({version.deprecated_reason or 'no reason given'})"
    elif failed:
        refusal = f"{len(failed)} of {len(gates)} gate(s) failed: " + "; ".join(g["reason"] for g in failed)
    with store.write() as conn:
        # Read the current target under the write lock: a concurrent promote cannot slip in between.
        current = store.alias_target(name, alias)
        if refusal:
            event_id = store.add_event(conn, name, "refused", alias=alias, from_version=current,
                                       to_version=version.version, actor=actor, reason=refusal, gates=gates)
        elif current == version.version:
            if weight is None or store.alias_weights(name).get(alias) == weight:
                return Promotion(version, alias, False, current, gates)
            event_id = _set_weight(store, conn, name, alias, weight, actor, reason)
            return Promotion(version, alias, False, current, gates, event_id)
        else:
            event_id = store.add_event(conn, name, "promote", alias=alias, from_version=current,
                                       to_version=version.version, actor=actor, reason=reason, gates=gates,
                                       weight=weight)
            store.move_alias(conn, name, alias, version.version, event_id, weight)
    if refusal:
        raise PromotionRefused(f"{alias} stays on {f'v{current}' if current else 'nothing'}: {refusal}",
                               hint=f"the refusal is recorded (event {event_id}); `tuneforge registry history {name}`")
    return Promotion(version, alias, True, current, gates, event_id)


def alias_stack(events: list[Event]) -> list[int]:
    """Replay one alias's moves: promote pushes its target, rollback pops; the last entry is the current target."""
    stack: list[int] = []
    for event in events:
        if event.action == "promote":
            stack.append(event.to_version)
        elif event.action == "rollback" and stack:
            stack.pop()
    return stack


def rollback(store: Store, name: str, alias: str, *, actor: str | None = None, reason: str | None = None) -> Event:
    """Move `alias` back to the version it pointed to before its latest promotion."""
    check_alias(alias)
    with store.write() as conn:
        stack = alias_stack(store.events(name, alias))
        current = store.alias_target(name, alias)
        if len(stack) < 2:
            raise RegistryError(f"{name}@{alias} has no earlier target to roll back to"
                                + (f" (it points to v{current}, its first promotion)" if current else ""),
                                hint=f"`tuneforge registry history {name}` shows the alias moves")
        target = stack[-2]
        event_id = store.add_event(conn, name, "rollback", alias=alias, from_version=current, to_version=target,
                                   actor=actor, reason=reason)
        store.move_alias(conn, name, alias, target, event_id)
    return store.events(name, alias)[-1]


def _set_weight(store: Store, conn, name: str, alias: str, weight: float, actor: str | None,
                reason: str | None) -> int:
    target = store.alias_target(name, alias)
    event_id = store.add_event(conn, name, "weight", alias=alias, from_version=target, to_version=target,
                               actor=actor, reason=reason, weight=weight)
    conn.execute("UPDATE aliases SET weight = ?, event_id = ?, moved_at = ? WHERE model = ? AND alias = ?",
                 (weight, event_id, now_iso(), name, alias))
    return event_id


def set_weight(store: Store, name: str, alias: str, weight: float, *, actor: str | None = None,
               reason: str | None = None) -> Event:
    """Change the share of traffic routed to `alias` (a canary) without moving it; recorded as a `weight` event.
    A server's automatic rollback sets a failing canary's weight to 0 this way, with its reason."""
    check_alias(alias)
    check_weight(weight)
    with store.write() as conn:
        if store.alias_target(name, alias) is None:
            raise RegistryError(f"{name} has no alias {alias!r} to weight",
                                hint=f"promote a version first: tuneforge registry promote {name} VERSION --to "
                                     f"{alias} --weight {weight}")
        event_id = _set_weight(store, conn, name, alias, weight, actor, reason)
    return next(e for e in store.events(name, alias, since=event_id - 1) if e.id == event_id)


def deprecate(store: Store, name: str, version_ref: str | int, *, actor: str | None = None,
              reason: str | None = None) -> tuple[Version, list[str]]:
    """Hide a version from new promotions; lineage stays. Returns the version and the aliases still on it."""
    version = store.lookup(name, version_ref)
    with store.write() as conn:
        conn.execute("UPDATE versions SET deprecated_at = ?, deprecated_by = ?, deprecated_reason = ? "
                     "WHERE model = ? AND version = ?",
                     (now_iso(), actor or current_user(), reason, name, version.version))
        store.add_event(conn, name, "deprecate", to_version=version.version, actor=actor, reason=reason)
    still = [a for a, v in store.aliases(name).items() if v == version.version]
    return store.version(name, version.version), still


# ------------------------------------------------------------------------------------------------ resolution
@dataclass(frozen=True)
class Resolved:
    """What `registry:NAME@REF` names right now."""

    model: str
    ref: str                   # as asked: an alias or a version
    version: int
    content_hash: str
    kind: str                  # "adapter" or "merged"
    model_ref: object          # tuneforge.models.ref.ModelRef of the artifact (kind "run")
    event_id: int              # the registry's last event id when this was read (a poller compares it)


def artifact_ref(version: Version, source: str, runs_dir: str | Path = "runs"):
    """The ModelRef a loader opens for a version: its merged folder, or its adapter on the registered base."""
    from tuneforge.models.ref import ModelRef, parse_model_ref

    folder = Path(version.artifacts.get(version.kind) or "")
    if not folder.is_dir():
        raise RegistryError(f"{version.label}: its {version.kind} folder {folder} is gone",
                            hint="the run directory was moved or deleted; register the run again from its new place")
    base = None
    base_path = version.base.get("path")
    base_source = base_path if base_path and Path(base_path).exists() else version.base.get("source")
    if base_source:
        base = parse_model_ref(base_source, runs_dir=runs_dir)
    common = {"base": base, "run_dir": version.run_dir, "name": version.model, "version": str(version.version)}
    if version.kind == "adapter":
        if base is None:
            raise RegistryError(f"{version.label}: an adapter without a recorded base model")
        return ModelRef("run", source, adapter_path=str(folder), **common)
    return ModelRef("run", source, path=str(folder), **common)


def resolve(db: str | Path | Store, name: str, ref: str | int, *, runs_dir: str | Path = "runs",
            source: str | None = None) -> Resolved:
    """Resolve NAME@ALIAS or NAME@VERSION now. One indexed read and a few stat calls: cheap enough to poll.
    `source` names the returned ModelRef (default: registry:NAME@REF)."""
    store = db if isinstance(db, Store) else Store(db, create=False)
    try:
        version = store.lookup(name, ref)
        event_id = store.last_event_id()
    finally:
        if store is not db:
            store.close()
    return Resolved(name, str(ref), version.version, version.content_hash, version.kind,
                    artifact_ref(version, source or f"registry:{name}@{ref}", runs_dir), event_id)


def alias_state(db: str | Path, name: str) -> tuple[int, dict[str, int]]:
    """(last event id, {alias: version}) in one short read: what a server polls to notice a promote or rollback."""
    with Store(db, create=False) as store:
        store.conn.execute("BEGIN")  # one snapshot for both reads
        try:
            return store.last_event_id(), store.aliases(name)
        finally:
            store.conn.execute("COMMIT")


def follow_state(db: str | Path | Store, name: str) -> tuple[int, dict[str, tuple[int, float | None]]]:
    """(last event id, {alias: (version, weight)}) in one snapshot read: what a server polls to follow aliases."""
    store = db if isinstance(db, Store) else Store(db, create=False)
    try:
        store.conn.execute("BEGIN")
        try:
            weights = store.alias_weights(name)
            return store.last_event_id(), {a: (v, weights.get(a)) for a, v in store.aliases(name).items()}
        finally:
            store.conn.execute("COMMIT")
    finally:
        if store is not db:
            store.close()


def resolve_model_ref(ref, *, runs_dir: str | Path = "runs", db: str | Path | None = None):
    """A `registry` ModelRef -> the artifact's ModelRef (any other ModelRef is returned unchanged)."""
    if getattr(ref, "kind", None) != "registry":
        return ref
    return resolve(db or default_db_path(runs_dir), ref.name, ref.version, runs_dir=runs_dir,
                   source=ref.source).model_ref
