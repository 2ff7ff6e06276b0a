"""What a registered version is made of, read from a finished run directory: its artifact and content hash, its
lineage (data, config, code, base model) and its evaluation results.

The content hash covers what decides the model's behaviour and nothing else: the artifact's weight files and
config (adapter_config.json / config.json), the base model's weights hash (an adapter means nothing without its
base) and the tokenizer + chat template files. Run names, timestamps and the lineage file a merge writes are left
out, so the same weights registered twice (or from two runs that produced identical bytes) are one version.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tuneforge.errors import RunError
from tuneforge.hashing import sha256_file
from tuneforge.registry.store import RegistryError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
MODEL_CONFIG_FILES = ("adapter_config.json", "config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json")


def _hash_files(folder: Path, names: list[str]) -> dict[str, str]:
    return {name: sha256_file(folder / name) for name in sorted(names)}


def artifact_files(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """({weight/config file: sha256}, {tokenizer/template file: sha256}) of a model or adapter folder."""
    weights = [p.name for p in folder.iterdir() if p.is_file()
               and (p.suffix in WEIGHT_SUFFIXES or p.name in MODEL_CONFIG_FILES or p.name.endswith(".index.json"))]
    tokenizer = [p.name for p in folder.iterdir() if p.is_file() and p.name in TOKENIZER_FILES]
    if not any(Path(n).suffix in WEIGHT_SUFFIXES for n in weights):
        raise RegistryError(f"{folder}: no weight files (*.safetensors, *.bin) to register")
    return _hash_files(folder, weights), _hash_files(folder, tokenizer)


def content_hash(kind: str, weights: dict[str, str], base_weights_sha256: str | None,
                 tokenizer: dict[str, str]) -> str:
    doc = {"kind": kind, "weights": weights, "base_weights_sha256": base_weights_sha256 if kind == "adapter" else None,
           "tokenizer": tokenizer}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _gguf_files(run_path: Path, exports: dict) -> list[dict]:
    """GGUF files the manifest's exports name (any key mentioning gguf), else any *.gguf inside the run folder."""
    named: list[str] = []

    def collect(value) -> None:
        if isinstance(value, str) and value.lower().endswith(".gguf"):
            named.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, list):
            for v in value:
                collect(v)

    for key, value in (exports or {}).items():
        if "gguf" in key.lower():
            collect(value)
    paths = [Path(p) if Path(p).is_absolute() else run_path / p for p in named]
    paths += [p for p in sorted(run_path.rglob("*.gguf")) if p not in paths and "checkpoints" not in p.parts]
    return [{"path": str(p.resolve()), "sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in paths if p.is_file()]


def read_run(run_ref: str | Path, runs_dir: str | Path, kind: str | None = None) -> dict:
    """Everything `register` stores for a run: kind, artifacts, content hash, base, lineage, results."""
    from tuneforge.runs.rundir import open_run

    run = open_run(run_ref, runs_dir)
    manifest = run.read_manifest()
    where = f"{run.manifest}"
    if not manifest:
        raise RunError(f"{where}: missing or empty; only finished training runs can be registered")
    if manifest.get("status") != "completed":
        raise RunError(f"{where}: status is {manifest.get('status')!r}, not 'completed'",
                       hint="register a finished run (`tuneforge runs ls` shows each run's state)")
    has_adapter = (run.adapter / "adapter_config.json").is_file()
    has_merged = (run.merged / "config.json").is_file()
    if kind is None:
        # An adapter is preferred: many versions then share one base in memory, and a rollback swaps megabytes.
        kind = "adapter" if has_adapter else "merged" if has_merged else None
    if kind is None or (kind == "adapter" and not has_adapter) or (kind == "merged" and not has_merged):
        have = [k for k, ok in (("adapter", has_adapter), ("merged", has_merged)) if ok]
        raise RunError(f"{run.path}: no {kind or 'adapter or merged'} model to register (has: {have or 'neither'})",
                       hint="`tuneforge export RUN` writes the merged folder")
    folder = run.adapter if kind == "adapter" else run.merged
    base = manifest.get("base_model") or {}
    if kind == "adapter" and not base.get("source"):
        raise RunError(f"{where}: base_model.source missing; an adapter cannot be registered without its base")
    weights, tokenizer = artifact_files(folder)

    config_sha = sha256_file(run.config) if run.config.is_file() else None
    results_path = run.eval_dir / "results.json"
    results = None
    if results_path.is_file():
        try:
            results = json.loads(results_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RunError(f"{results_path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    training = manifest.get("training") or {}
    lineage = {
        "run": run.name,
        "run_dir": str(run.path.resolve()),
        "datasets": manifest.get("datasets") or {},
        "config_file": str(run.config.resolve()) if run.config.is_file() else None,
        "config_sha256": config_sha,
        "config": _read_yaml(run.config),
        "code": manifest.get("git"),
        "tuneforge_version": manifest.get("tuneforge_version"),
        "packages": manifest.get("packages") or {},
        "seed": manifest.get("seed"),
        "method": (manifest.get("method") or {}).get("name"),
        "objective": training.get("objective"),
        "hardware": manifest.get("hardware") or {},
        "started_at": manifest.get("started_at"),
        "finished_at": manifest.get("finished_at"),
        "resources": {"timings": manifest.get("timings") or {}, "steps": training.get("steps"),
                      "real_tokens": training.get("real_tokens"), "trained_tokens": training.get("trained_tokens"),
                      "tokens_per_second": training.get("tokens_per_second"),
                      "peak_memory": manifest.get("peak_memory") or training.get("peak_memory")},
        "licenses": manifest.get("licenses") or {},
        "results_sha256": sha256_file(results_path) if results is not None else None,
    }
    artifacts = {kind: str(folder.resolve()),
                 **({"merged": str(run.merged.resolve())} if has_merged and kind != "merged" else {}),
                 "files": weights, "tokenizer_files": tokenizer,
                 "gguf": _gguf_files(run.path, manifest.get("exports") or {})}
    return {"kind": kind, "run_dir": str(run.path.resolve()), "artifacts": artifacts,
            "base": {"source": base.get("source"), "path": base.get("path"),
                     "weights_sha256": base.get("weights_sha256"), "kind": base.get("kind")},
            "content_hash": content_hash(kind, weights, base.get("weights_sha256"), tokenizer),
            "lineage": lineage, "results": results}


def _read_yaml(path: Path) -> dict | None:
    import yaml

    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return None


def verify(version) -> list[str]:
    """Re-hash a version's files against what was registered; the list of mismatches (empty: all intact)."""
    problems = []
    folder = Path(version.artifacts.get(version.kind, ""))
    for group in ("files", "tokenizer_files"):
        for name, digest in (version.artifacts.get(group) or {}).items():
            path = folder / name
            if not path.is_file():
                problems.append(f"{path}: missing")
            elif sha256_file(path) != digest:
                problems.append(f"{path}: sha256 changed since registration")
    for name, entry in (version.lineage.get("datasets") or {}).items():
        path = Path(entry.get("path") or "")
        if entry.get("path") and path.is_file() and sha256_file(path) != entry.get("sha256"):
            problems.append(f"{path} ({name} data): sha256 differs from the run's lineage")
    return problems
