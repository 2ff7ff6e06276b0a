"""One way in for every model source: a catalog name, a local HF folder, a .gguf file or a hub id.

`resolve_model` turns what the user wrote into a `ResolvedModel` whose `path` is something `from_pretrained`
accepts (the cache machinery is `tuneforge.models.cache`; richer references - runs, adapters, endpoints - are
`tuneforge.models.ref.ModelRef`, which resolves its base through here).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tuneforge.errors import ModelSourceError
from tuneforge.models.cache import (
    convert_gguf,
    gguf_cache_dir,
    read_marker,
    weights_sha256,
)
from tuneforge.models.catalog import CATALOG, fetch_catalog_model

SourceKind = Literal["catalog", "folder", "gguf", "hub"]


@dataclass(frozen=True)
class ResolvedModel:
    source: str
    kind: SourceKind
    path: str
    weights_sha256: str | None
    origin: dict = field(default_factory=dict)


def resolve_gguf(source: str, gguf_path: Path, cache_dir: Path | None) -> ResolvedModel:
    dest, digest = gguf_cache_dir(gguf_path, cache_dir)
    marker = convert_gguf(gguf_path, dest, origin={"gguf_path": str(gguf_path), "gguf_sha256": digest})
    # The marker remembers the path first converted; a renamed copy of the same file reports its own path.
    origin = {**_origin_of(marker), "gguf_path": str(gguf_path)}
    return ResolvedModel(source, "gguf", str(dest), marker["weights_sha256"], origin)


def _origin_of(marker: dict) -> dict:
    diff = marker.get("verification", {}).get("max_abs_logit_diff")
    return {**marker.get("origin", {}), "verified_max_abs_logit_diff": diff}


# -------------------------------------------------------------------------------------------- resolving


def _looks_like_path(source: str) -> bool:
    return (
        source.startswith(("/", "./", "../", "~", ".\\", "..\\"))
        or source.lower().endswith(".gguf")
        or (os.sep == "\\" and len(source) > 2 and source[1] == ":")
    )


def resolve_model(source: str, *, cache_dir: Path | None = None) -> ResolvedModel:
    """Resolve a catalog name, local folder, .gguf path or hub id to something `from_pretrained` can load."""
    source = (source or "").strip()
    if not source:
        raise ModelSourceError("no model given", hint=_where_models_come_from(CATALOG))
    if source in CATALOG:
        folder = fetch_catalog_model(source, cache_dir)
        marker = read_marker(folder) or {}
        return ResolvedModel(source, "catalog", str(folder), marker.get("weights_sha256"), _origin_of(marker))

    path = Path(source).expanduser()
    if path.exists():
        return _resolve_local(source, path, cache_dir)
    if _looks_like_path(source):
        raise ModelSourceError(f"model path {path} does not exist", hint=_where_models_come_from(CATALOG))
    return _resolve_hub(source, CATALOG)


def _resolve_local(source: str, path: Path, cache_dir: Path | None) -> ResolvedModel:
    path = path.resolve()
    if path.is_file():
        if path.suffix.lower() == ".gguf" or _is_gguf(path):
            return resolve_gguf(source, path, cache_dir)
        raise ModelSourceError(
            f"{path} is a file but not a .gguf model",
            hint="pass a Hugging Face model folder (with config.json), a .gguf file, a hub id or a catalog name",
        )
    if not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        hint = (
            f"it holds {ggufs[0].name}: pass that file instead"
            if ggufs
            else "pass the folder save_pretrained wrote (config.json + weights), or a .gguf file"
        )
        raise ModelSourceError(f"the model folder {path} has no config.json", hint=hint)
    return ResolvedModel(source, "folder", str(path), weights_sha256(path), {"folder": str(path)})


def _is_gguf(path: Path) -> bool:
    from tuneforge.integrations.gguf import is_gguf_file

    return is_gguf_file(path)


def _where_models_come_from(catalog: dict) -> str:
    names = ", ".join(sorted(catalog)) or "(none)"
    return f"pass a local model folder, a .gguf file, a hub id, or a catalog name: {names} (see `tuneforge models ls`)"


def _resolve_hub(source: str, catalog: dict) -> ResolvedModel:
    """Check the hub id now (config only, small), so an offline machine fails here with a clear message."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source)
    except Exception as error:  # noqa: BLE001 - hub failures come as OSError, ValueError, HTTP and validation errors
        raise hub_error(source, error, catalog) from error
    origin = {"hub_id": source}
    revision = getattr(config, "_commit_hash", None)
    if revision:
        origin["revision"] = revision
    return ResolvedModel(source, "hub", source, None, origin)


def hub_error(source: str, error: BaseException, catalog: dict | None = None) -> ModelSourceError:
    catalog = CATALOG if catalog is None else catalog
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    reason = "HF_HUB_OFFLINE is set and it is not in the local hub cache" if offline else _first_line(error)
    return ModelSourceError(
        f"could not fetch {source!r} from the Hugging Face hub ({reason})",
        hint=_where_models_come_from(catalog),
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
