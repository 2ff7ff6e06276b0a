"""Start a real tuneforge server (uvicorn in a thread) on 127.0.0.1 on a free port, on a tiny model."""
from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import httpx

from tests.tiny_models import TOKENIZER_DIR, build_tiny_model


def tiny_adapter(path: Path, seed: int, **lora) -> Path:
    """A random-initialised LoRA adapter (init_lora_weights=False, so it changes the answers) on the tiny base."""
    import torch
    from peft import LoraConfig, get_peft_model

    base = build_tiny_model()  # it seeds torch itself: seed the adapter's initialisation after it
    torch.manual_seed(seed)
    options = {"r": 4, "target_modules": ["q_proj", "v_proj"], "init_lora_weights": False}
    options.update(lora)
    get_peft_model(base, LoraConfig(**options)).save_pretrained(path)
    return path


def tiny_base(path: Path) -> Path:
    from transformers import AutoTokenizer

    build_tiny_model().save_pretrained(path)
    AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(path)
    return path


@contextlib.contextmanager
def running_server(cfg, timeout: float = 60.0):
    """Yield (base_url, admin_key, app); the server is stopped (and its engine thread joined) on exit. admin_key is
    None when the database already had one (a second replica on a shared database)."""
    import uvicorn

    from tuneforge.serve.server import build_app, free_port

    app, store, created = build_app(cfg)
    admin_key = created.read_text().strip() if created else None
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                if httpx.get(base + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not become healthy")
            time.sleep(0.05)
        yield base, admin_key, app
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        store.close()


def adapter_run(root: Path, name: str, seed: int, base: Path) -> Path:
    """root/runs/<name>: a finished run as training leaves it (manifest + config + adapter), with a tiny random
    adapter on `base`: something `tuneforge registry register` records as a real adapter version."""
    import json

    run = root / "runs" / name
    tiny_adapter(run / "adapter", seed)
    (run / "config.yaml").write_text(f"model: {{source: {base}}}\n")
    (run / "manifest.json").write_text(json.dumps({
        "status": "completed", "base_model": {"source": str(base), "path": str(base)}, "datasets": {},
        "git": {"commit": "0" * 40, "dirty": False}}))
    return run
