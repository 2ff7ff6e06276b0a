"""Start a server from a `ServeConfig`: the state database, the admin key file, the model loader, uvicorn."""
from __future__ import annotations

import os
import socket
from pathlib import Path

from tuneforge.errors import ConfigError
from tuneforge.serve.config import ServeConfig
from tuneforge.serve.db.store import Store

ADMIN_KEY_FILE = "admin.key"
DB_FILE = "serve.db"


def open_store(state_dir: str | Path, key_file: str | None = None, *, create_key: bool = False,
               database_url: str | None = None) -> Store:
    """The server's state: the database URL when one is given (shared by replicas), else state_dir/serve.db."""
    from tuneforge.serve.db.store import load_cipher

    cipher = load_cipher(key_file, create=create_key) if key_file else None
    return Store(database_url or Path(state_dir) / DB_FILE, cipher)


def ensure_admin_key(store: Store, state_dir: str | Path) -> Path | None:
    """On first start (no admin key in the database) create one and write it to state_dir/admin.key (mode 600);
    returns the file's path when it was created now."""
    if any(k.admin and k.revoked is None for k in store.list_keys()):
        return None
    _, secret = store.create_key("admin", admin=True)
    path = Path(state_dir) / ADMIN_KEY_FILE
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secret + "\n")
    return path


def model_loader(cfg: ServeConfig):
    """The loader `create_app` runs in a thread: the base model once, its name and weights hash."""

    def load():
        from tuneforge.models.inference import InferenceEngine
        from tuneforge.models.loading import load_model, load_tokenizer
        from tuneforge.models.ref import parse_model_ref
        from tuneforge.models.sources import resolve_model
        from tuneforge.registry.release import resolve_model_ref

        # A registry base (registry:NAME@production) is resolved once at start: a base swap is a restart.
        ref = resolve_model_ref(parse_model_ref(cfg.base), db=cfg.registry_db)
        if cfg.engine == "llamacpp":
            from tuneforge.serve.engines.llamacpp_engine import LlamaCppEngine

            gguf = ref.path if ref.kind == "gguf" else None
            if gguf is None:
                raise ConfigError(f"base {cfg.base}: engine llamacpp serves a .gguf file",
                                  hint="export one with `tuneforge export RUN --gguf` and name the file as base")
            return LlamaCppEngine(gguf, n_ctx=cfg.n_ctx, name=cfg.base), Path(gguf).name, None
        if cfg.engine == "vllm" and ref.kind == "gguf":
            raise ConfigError(f"base {cfg.base}: engine vllm serves a Hugging Face model folder, not a .gguf file",
                              hint="name the base model (or its folder) as base, or use engine llamacpp")
        base_ref = ref.base if ref.adapter_path else ref
        resolved = resolve_model(base_ref.model_path)
        name = Path(cfg.base).name if ref.kind in ("folder", "gguf", "run") else cfg.base
        if cfg.engine == "vllm":
            from tuneforge.serve.engines.vllm_engine import VllmEngine

            engine = VllmEngine(resolved, name=cfg.base, dtype=cfg.dtype, max_loras=cfg.max_loaded_adapters,
                                max_lora_rank=cfg.max_lora_rank, gpu_memory_utilization=cfg.gpu_memory_utilization,
                                max_model_len=cfg.max_model_len)
            return engine, name, resolved.weights_sha256
        engine = InferenceEngine(load_model(resolved, cfg.dtype), load_tokenizer(resolved), name=cfg.base)
        return engine, name, resolved.weights_sha256

    return load


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def build_app(cfg: ServeConfig):
    from tuneforge.serve.app import create_app

    if cfg.engine == "vllm":  # fail at start with the config field named, not later in /health
        from tuneforge.serve.engines.vllm_engine import require_vllm

        require_vllm()

    Path(cfg.state_dir).mkdir(parents=True, exist_ok=True)  # the admin key file lives there, whatever the database
    store = open_store(cfg.state_dir, cfg.request_log.key_file, create_key=True, database_url=cfg.database_url)
    created = ensure_admin_key(store, cfg.state_dir)
    return create_app(cfg, store, model_loader(cfg)), store, created


def run_server(cfg: ServeConfig, announce=print) -> None:
    import uvicorn

    app, store, created = build_app(cfg)
    port = cfg.port or free_port(cfg.host)
    announce(f"listening on http://{cfg.host}:{port}/v1  (OpenAI-compatible; /health, /metrics)")
    base_name = cfg.base_name or (Path(cfg.base).name if Path(cfg.base).expanduser().exists() else cfg.base)
    names = [base_name] + [f"{a.name} (adapter {a.path})" for a in cfg.adapters]
    announce("serving: " + ", ".join(names))
    key_file = Path(cfg.state_dir) / ADMIN_KEY_FILE
    if created:
        announce(f"admin key created on first start: {created} (keep it secret; use it to create client keys)")
    else:
        shown = key_file if key_file.is_file() else "created earlier (see `tuneforge serve keys list`)"
        announce(f"admin key: {shown}")
    announce(f"state (keys, request log, feedback): {store.where}"
             + (" (shared: replicas on this database share keys, limits and the log)" if store.shared else ""))
    try:
        uvicorn.run(app, host=cfg.host, port=port, log_level="warning")
    finally:
        store.close()
