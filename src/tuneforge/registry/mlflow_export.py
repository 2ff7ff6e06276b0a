"""`tuneforge registry export-mlflow NAME --tracking-uri URI`: a model's versions as MLflow runs and registered
model versions, for teams whose tracking server and model registry are MLflow.

Per version, one MLflow run (tagged with the content hash, so exporting again reuses it) carrying:
  params     the run's resolved config (flattened, dotted keys) and its lineage hashes (data, config, base, commit)
  metrics    the tuned model's summary metrics, `base.*` and `delta.*` from the comparison, and the training curve
             from the run's metrics.jsonl with its steps
  artifacts  tuneforge/lineage.json, eval/results.json and (unless --no-artifacts) the weights under model/
Then a version of the registered model NAME pointing at that run, and the registry's aliases set on them.

mlflow (or mlflow-skinny) is imported only here. MLflow 3 refuses the plain file store unless
MLFLOW_ALLOW_FILE_STORE=true; an sqlite:/// URI needs the full mlflow package (SQLAlchemy).
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

from tuneforge.errors import ConfigError
from tuneforge.registry.changelog import flatten
from tuneforge.registry.store import RegistryError, Store, Version

CONTENT_TAG = "tuneforge.content_hash"
PARAM_LIMIT = 500  # characters kept of a long param value (MLflow servers cap values, older ones at 500)


def _mlflow():
    try:
        import mlflow  # noqa: F401
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param, RunTag
    except ImportError:
        raise ConfigError("export-mlflow needs the mlflow package",
                          hint="pip install mlflow-skinny (or install tuneforge[tracking])") from None
    return MlflowClient, Metric, Param, RunTag


def version_params(version: Version) -> dict[str, str]:
    lineage = version.lineage
    params = {f"config.{k}": v for k, v in flatten(lineage.get("config") or {}).items()}
    params.update({f"data.{split}.sha256": entry.get("sha256") for split, entry in
                   (lineage.get("datasets") or {}).items()})
    params.update({"tuneforge.version": version.version, "tuneforge.kind": version.kind,
                   "tuneforge.run": lineage.get("run"), "config.sha256": lineage.get("config_sha256"),
                   "base.source": version.base.get("source"), "base.weights_sha256": version.base.get("weights_sha256"),
                   "code.commit": (lineage.get("code") or {}).get("commit")})
    return {k: str(v)[:PARAM_LIMIT] for k, v in params.items() if v is not None}


def version_metrics(version: Version) -> dict[str, float]:
    results = version.results or {}
    models = results.get("models") or {}
    out = {}
    for side, prefix in (("tuned", ""), ("base", "base.")):
        for metric, value in ((models.get(side) or {}).get("summary") or {}).items():
            out[f"{prefix}{metric}"] = value
    for metric, comp in (results.get("comparison") or {}).items():
        for key in ("delta", "ci_low", "ci_high"):
            out[f"delta.{metric}" + ("" if key == "delta" else f".{key}")] = comp.get(key)
    return {k: float(v) for k, v in out.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def training_curve(version: Version) -> list[tuple[str, float, int]]:
    """(metric, value, step) from the run's metrics.jsonl (loss, eval_loss, learning_rate, tokens/s, ...)."""
    path = Path(version.run_dir or "") / "metrics.jsonl"
    if not path.is_file():
        return []
    points = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        step = record.get("step")
        if not isinstance(step, int):
            continue
        points += [(f"train.{k}", float(v), step) for k, v in record.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    return points


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def export_to_mlflow(store: Store, name: str, *, tracking_uri: str, registry_uri: str | None = None,
                     experiment: str = "tuneforge", upload_artifacts: bool = True) -> dict:
    MlflowClient, Metric, Param, RunTag = _mlflow()
    versions = store.versions(name)
    if not versions:
        store.version(name, 1)  # raises "no model named ..." with its hint
    try:
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    except Exception as exc:  # noqa: BLE001  # MLflow raises its own exception types for a bad/unreachable URI
        raise RegistryError(f"--tracking-uri {tracking_uri}: MLflow cannot open it ({exc})".split("\n")[0],
                            hint="file: stores need MLFLOW_ALLOW_FILE_STORE=true on MLflow 3; sqlite:/// needs "
                                 "the full mlflow package") from None
    try:
        client.get_registered_model(name)
    except Exception:  # noqa: BLE001  # "not found" is an exception in MLflow
        client.create_registered_model(name, description=f"exported from the tuneforge registry {store.path}")

    report = {"experiment_id": experiment_id, "versions": [], "aliases": {}}
    by_version: dict[int, str] = {}
    for version in versions:
        existing = client.search_runs([experiment_id], filter_string=f"tags.`{CONTENT_TAG}` = '{version.content_hash}'"
                                      f" and tags.`tuneforge.model` = '{name}'", max_results=1)
        if existing:
            run_id = existing[0].info.run_id
            models = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
            if models:
                by_version[version.version] = models[0].version
                report["versions"].append({"version": version.version, "run_id": run_id,
                                           "mlflow_version": models[0].version, "existing": True})
                continue
        else:
            run_id = _log_run(client, experiment_id, name, version, upload_artifacts, Metric, Param, RunTag)
        source = f"runs:/{run_id}/model" if upload_artifacts else str(version.artifacts.get(version.kind))
        model_version = client.create_model_version(
            name, source, run_id=run_id, description=version.note,
            tags={"tuneforge.version": str(version.version), CONTENT_TAG: version.content_hash,
                  "tuneforge.kind": version.kind,
                  **({"tuneforge.deprecated": version.deprecated_reason or "yes"} if version.deprecated_at else {})})
        by_version[version.version] = model_version.version
        report["versions"].append({"version": version.version, "run_id": run_id,
                                   "mlflow_version": model_version.version})
    for alias, number in store.aliases(name).items():
        client.set_registered_model_alias(name, alias, by_version[number])
        report["aliases"][alias] = by_version[number]
    return report


def _log_run(client, experiment_id: str, name: str, version: Version, upload_artifacts: bool, Metric, Param,
             RunTag) -> str:
    run = client.create_run(experiment_id, run_name=f"{name}-v{version.version}",
                            tags={CONTENT_TAG: version.content_hash, "tuneforge.model": name,
                                  "tuneforge.version": str(version.version),
                                  "mlflow.note.content": version.note or ""})
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    params = [Param(k, v) for k, v in version_params(version).items()]
    metrics = [Metric(k, v, now, 0) for k, v in version_metrics(version).items()]
    metrics += [Metric(k, v, now, step) for k, v, step in training_curve(version)]
    for chunk in _chunks(params, 100):
        client.log_batch(run_id, params=chunk)
    for chunk in _chunks(metrics, 1000):
        client.log_batch(run_id, metrics=chunk)
    client.log_batch(run_id, tags=[RunTag("tuneforge.registered_by", version.registered_by or "")])
    with tempfile.TemporaryDirectory() as tmp:
        lineage = Path(tmp) / "lineage.json"
        lineage.write_text(json.dumps({"content_hash": version.content_hash, "base": version.base,
                                       "artifacts": version.artifacts, **version.lineage}, indent=2, default=str))
        client.log_artifact(run_id, str(lineage), "tuneforge")
        if version.results is not None:
            results = Path(tmp) / "results.json"
            results.write_text(json.dumps(version.results))
            client.log_artifact(run_id, str(results), "eval")
    if upload_artifacts:
        client.log_artifacts(run_id, str(version.artifacts.get(version.kind)), "model")
    client.set_terminated(run_id)
    return run_id
