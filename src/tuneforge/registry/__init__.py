"""The model registry: versions of named models, gated promotion through aliases, rollback, change log, dossier.

The API a long-running process (the server) calls to follow alias moves::

    from tuneforge.registry import alias_state, resolve
    event_id, aliases = alias_state(db, "contacts")        # one snapshot read; poll it (e.g. every second)
    hit = resolve(db, "contacts", "production")             # -> Resolved(version, content_hash, kind, model_ref, ...)
    hit.model_ref                                           # ModelRef kind "run": adapter_path + base, or merged path

Re-resolve only when `event_id` changed; `history(...)` (Store.events) explains every move.
"""
from tuneforge.registry.release import (
    PromotionRefused,
    Resolved,
    alias_state,
    deprecate,
    follow_state,
    promote,
    register,
    resolve,
    resolve_model_ref,
    rollback,
    set_weight,
)
from tuneforge.registry.store import RegistryError, Store, default_db_path

__all__ = ["PromotionRefused", "RegistryError", "Resolved", "Store", "alias_state", "default_db_path", "deprecate",
           "follow_state", "promote", "register", "resolve", "resolve_model_ref", "rollback", "set_weight"]
