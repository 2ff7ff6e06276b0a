"""`tuneforge registry ...`: versions, gated promotion, aliases, rollback, history, change log, dossier, MLflow.

    tuneforge registry register runs/quickstart --name contacts --note "first cut"
    tuneforge registry promote contacts 1 --to production --gates examples/gates/quickstart.yaml
    tuneforge registry rollback contacts --alias production
    tuneforge registry promote contacts 2 --to canary --weight 0.1     # a server following contacts@production
    tuneforge registry compare contacts --live --server http://127.0.0.1:8000 --key-file serve-state/admin.key
    tuneforge eval registry:contacts@production --data test.jsonl

The database is $TUNEFORGE_REGISTRY, else registry.db next to --runs-dir; --db overrides both.
Exit status: 0 done, 1 refused (a gate failed, deprecated version, nothing to roll back), 2 bad input.
"""
from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from tuneforge.console import make_console

app = typer.Typer(help="Model registry: register runs as versions, promote through gates, roll back, audit.",
                  no_args_is_help=True)

DbOption = typer.Option(None, "--db", help="Registry database (default: $TUNEFORGE_REGISTRY, else registry.db "
                                           "next to --runs-dir).")
RunsDir = typer.Option(Path("runs"), "--runs-dir", help="Where run names are looked up.")
GatesOption = typer.Option(None, "--gates", "-g", help="Gate file run on the version's results; a failing gate "
                                                      "refuses the move (exit 1).")
ChangelogOut = typer.Option(None, "--out", help="Markdown file to write (default: print it).")
DossierOut = typer.Option(..., "--out", help="Folder to write the dossier into (replaced whole).")


def _store(db: Path | None, runs_dir: Path, create: bool = False):
    from tuneforge.registry.store import Store, default_db_path

    return Store(db or default_db_path(runs_dir), create=create)


def _out():
    return make_console(stderr=False)


@app.command("register")
def register_cmd(
    run: str = typer.Argument(..., help="Run name (under --runs-dir) or run directory."),
    name: str = typer.Option(..., "--name", help="Registered model name."),
    note: str | None = typer.Option(None, "--note", help="Why this version exists."),
    kind: str | None = typer.Option(None, "--kind", help="adapter or merged (default: the adapter when the run "
                                                            "has one)."),
    db: Path | None = DbOption,
    runs_dir: Path = RunsDir,
) -> None:
    """Record a run as a version of NAME (same content twice -> the same version)."""
    from tuneforge.errors import ConfigError
    from tuneforge.registry.release import register

    if kind not in (None, "adapter", "merged"):
        raise ConfigError(f"--kind {kind!r}: choose adapter or merged")
    with _store(db, runs_dir, create=True) as store:
        version, created = register(store, run, name, runs_dir=runs_dir, note=note, kind=kind)
    verb = "registered" if created else "already registered (same content) as"
    _out().print(f"{verb} {version.label}: {version.kind}, content sha256 {version.content_hash[:16]}, "
                 f"run {version.lineage.get('run')}" + (f", {len(version.artifacts.get('gguf') or [])} GGUF file(s)"
                                                         if version.artifacts.get("gguf") else ""))


@app.command("ls")
def list_cmd(db: Path | None = DbOption, runs_dir: Path = RunsDir) -> None:
    """Every model with its versions and aliases."""
    with _store(db, runs_dir) as store:
        table = Table(title=f"registry {store.path}")
        for column in ("model", "versions", "latest", "aliases", "deprecated"):
            table.add_column(column)
        for model in store.models():
            versions = store.versions(model)
            table.add_row(model, str(len(versions)), f"v{versions[-1].version}",
                          ", ".join(f"{a} -> v{v}" for a, v in store.aliases(model).items()) or "-",
                          ", ".join(f"v{v.version}" for v in versions if v.deprecated_at) or "-")
    _out().print(table)


@app.command("show")
def show_cmd(
    name: str = typer.Argument(..., help="Model name."),
    version: str | None = typer.Argument(None, help="Version or alias (default: list every version)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full record as JSON."),
    db: Path | None = DbOption,
    runs_dir: Path = RunsDir,
) -> None:
    """A model's versions, or one version's record (artifacts, lineage, headline results)."""
    with _store(db, runs_dir) as store:
        if version is None:
            aliases = store.aliases(name)
            table = Table(title=f"{name} ({store.path})")
            for column in ("version", "kind", "content", "run", "registered", "aliases", "headline"):
                table.add_column(column, overflow="fold")
            for v in store.versions(name):
                table.add_row(f"v{v.version}" + (" (deprecated)" if v.deprecated_at else ""), v.kind,
                              v.content_hash[:12], str(v.lineage.get("run")), v.registered_at,
                              ", ".join(a for a, n in aliases.items() if n == v.version) or "-", _headline(v.results))
            _out().print(table)
            return
        record = store.lookup(name, version)
    if as_json:
        typer.echo(json.dumps(record.__dict__, indent=2, default=str))
        return
    out = _out()
    out.print(f"[bold]{escape(record.label)}[/] {record.kind}, content sha256 {record.content_hash}")
    out.print(f"artifact: {record.artifacts.get(record.kind)}  base: {record.base.get('source')} "
              f"(weights sha256 {str(record.base.get('weights_sha256'))[:16]})")
    for split, entry in (record.lineage.get("datasets") or {}).items():
        out.print(f"data {split}: {entry.get('sha256')} ({entry.get('rows')} rows)")
    out.print(f"config sha256 {record.lineage.get('config_sha256')}, commit "
              f"{(record.lineage.get('code') or {}).get('commit') or 'unknown'}")
    out.print(f"results: {_headline(record.results)}")


def _headline(results: dict | None) -> str:
    if not results:
        return "-"
    metric = results.get("headline_metric")
    tuned = ((results.get("models") or {}).get("tuned") or {}).get("summary") or {}
    return f"{metric} {tuned[metric]:.3f}" if metric in tuned else "-"


def _print_gates(gates: list[dict]) -> None:
    out = _out()
    for g in gates:
        out.print(("[green]PASS[/] " if g["passed"] else "[red]FAIL[/] ") + escape(f"{g['line']}: {g['reason']}"),
                  highlight=False)


@app.command("promote")
def promote_cmd(
    name: str = typer.Argument(..., help="Model name."),
    version: str = typer.Argument(..., help="Version number (3 or v3) or an alias whose target to promote."),
    to: str = typer.Option(..., "--to", help="Alias to move (production, staging, canary, ...)."),
    gates: Path | None = GatesOption,
    reason: str | None = typer.Option(None, "--reason", help="Why (recorded in the history)."),
    weight: float | None = typer.Option(None, "--weight", min=0.0, max=1.0,
                                        help="Share of traffic a server following NAME routes to this alias "
                                             "(a canary: 0.1 = 10%); kept until set again."),
    db: Path | None = DbOption,
    runs_dir: Path = RunsDir,
) -> None:
    """Move an alias to a version when all gates pass; a refusal is recorded with its reasons."""
    from tuneforge.registry.release import PromotionRefused, gate_outcomes, promote

    with _store(db, runs_dir) as store:
        try:
            result = promote(store, name, version, to, gates_file=gates, reason=reason, weight=weight)
        except PromotionRefused:
            target = store.lookup(name, version)
            _print_gates(gate_outcomes(target, gates) if gates else [])
            raise
    _print_gates(result.gates)
    share = f" at weight {weight:g}" if weight is not None else ""
    if result.moved:
        _out().print(f"{name}@{to}: {f'v{result.from_version}' if result.from_version else 'none'} -> "
                     f"v{result.version.version}{share}")
    elif result.event_id is not None:
        _out().print(f"{name}@{to} stays on v{result.version.version}; weight set to {weight:g}")
    else:
        _out().print(f"{name}@{to} already points to v{result.version.version}; nothing moved")


@app.command("rollback")
def rollback_cmd(
    name: str = typer.Argument(..., help="Model name."),
    alias: str = typer.Option("production", "--alias", help="Alias to move back."),
    reason: str | None = typer.Option(None, "--reason", help="Why (recorded in the history)."),
    db: Path | None = DbOption,
    runs_dir: Path = RunsDir,
) -> None:
    """Move an alias back to the version it pointed to before its latest promotion."""
    from tuneforge.registry.release import rollback

    with _store(db, runs_dir) as store:
        event = rollback(store, name, alias, reason=reason)
    _out().print(f"{name}@{alias}: v{event.from_version} -> v{event.to_version} (rolled back)")


@app.command("weight")
def weight_cmd(
    name: str = typer.Argument(..., help="Model name."),
    alias: str = typer.Argument(..., help="Alias whose traffic share to set (canary)."),
    weight: float = typer.Argument(..., min=0.0, max=1.0, help="Share of traffic from 0 to 1 (0 stops it)."),
    reason: str | None = typer.Option(None, "--reason", help="Why (recorded in the history)."),
    db: Path | None = DbOption,
    runs_dir: Path = RunsDir,
) -> None:
    """Set the share of traffic servers route to an alias, without moving it (0 takes a canary out)."""
    from tuneforge.registry.release import set_weight

    with _store(db, runs_dir) as store:
        event = set_weight(store, name, alias, weight, reason=reason)
    _out().print(f"{name}@{alias} (v{event.to_version}): weight {weight:g}")


@app.command("compare")
def compare_cmd(
    name: str = typer.Argument(..., help="The served model name (the adapter name in the serve config)."),
    live: bool = typer.Option(True, "--live/--no-live", help="Live traffic statistics (the only mode)."),
    server: str | None = typer.Option(None, "--server", help="A running server's URL (http://HOST:PORT)."),
    key_file: Path | None = typer.Option(None, "--key-file", help="Admin key file of that server (default: "
                                                                  "$TUNEFORGE_API_KEY)."),
    log: Path | None = typer.Option(None, "--log", help="Or read a server's request log (STATE_DIR/serve.db)."),
    window_s: float | None = typer.Option(None, "--window", help="Only the last this-many seconds."),
    as_json: bool = typer.Option(False, "--json", help="Print the numbers as JSON."),
) -> None:
    """Production vs canary side by side on live traffic: requests, error rate, guardrail hits, negative feedback,
    low-confidence share, p50/p95 latency, per version."""
    import os

    from tuneforge.errors import ConfigError

    if not live:
        raise ConfigError("compare reads live traffic; `tuneforge registry changelog NAME` compares eval results")
    if (server is None) == (log is None):
        raise ConfigError("give --server URL (a running server) or --log STATE_DIR/serve.db (its request log)")
    if server:
        import httpx

        secret = key_file.read_text().strip() if key_file else os.environ.get("TUNEFORGE_API_KEY")
        if not secret:
            raise ConfigError("--server needs an admin key: --key-file STATE_DIR/admin.key or $TUNEFORGE_API_KEY")
        try:
            response = httpx.get(f"{server.rstrip('/')}/admin/registry/{name}/stats",
                                 params={"window_s": window_s} if window_s else None,
                                 headers={"authorization": f"Bearer {secret}"}, timeout=30)
        except httpx.HTTPError as exc:
            raise ConfigError(f"{server}: cannot reach the server ({exc})") from None
        if response.status_code != 200:
            message = (response.json().get("error") or {}).get("message") if response.headers.get(
                "content-type", "").startswith("application/json") else response.text
            raise ConfigError(f"{server}: {response.status_code} {message}")
        report = response.json()
    else:
        from tuneforge.serve.db.store import Store as RequestLog
        from tuneforge.serve.follow import version_stats

        if not log.is_file():
            raise ConfigError(f"{log}: no request log there", hint="a server writes STATE_DIR/serve.db")
        request_log = RequestLog(log)
        try:
            report = {"model": name, "window_s": window_s,
                      "versions": version_stats(request_log, name, window_s=window_s)}
        finally:
            request_log.close()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    _print_live(report)


def _print_live(report: dict) -> None:
    title = f"{report['model']}: live traffic" + (f" (last {report['window_s']:g} s)" if report.get("window_s") else "")
    if "production" in report:
        title += (f"; routing production v{report['production']}" + (
            f", canary v{report['canary']} at {report['canary_weight']:.0%}" if report.get("canary") else ""))
    table = Table(title=title)
    for column in ("arm", "version", "requests", "errors", "guardrail", "rated", "negative", "low conf.",
                   "p50 s", "p95 s"):
        table.add_column(column, justify="right", overflow="fold")

    def seconds(value):
        return f"{value:.3f}" if value is not None else "-"

    for row in report["versions"]:
        table.add_row(row["arm"], f"v{row['version']}", str(row["requests"]), f"{row['error_rate']:.1%}",
                      f"{row['guardrail_rate']:.1%}", str(row["rated"]), f"{row['negative_feedback_rate']:.1%}",
                      f"{row['low_confidence_rate']:.1%}", seconds(row["p50_latency_s"]),
                      seconds(row["p95_latency_s"]))
    _out().print(table)


@app.command("deprecate")
def deprecate_cmd(
    name: str = typer.Argument(..., help="Model name."),
    version: str = typer.Argument(..., help="Version number."),
    reason: str | None = typer.Option(None, "--reason", help="Why (recorded)."),
    db: Path | None = DbOption,
    runs_dir: Path = RunsDir,
) -> None:
    """Hide a version from new promotions; its lineage and results stay."""
    from tuneforge.registry.release import deprecate

    with _store(db, runs_dir) as store:
        record, still = deprecate(store, name, version, reason=reason)
    _out().print(f"{record.label} deprecated" + (f"; still the target of {', '.join(still)} (promote another "
                                                  "version or roll back to move it)" if still else ""))


@app.command("history")
def history_cmd(
    name: str = typer.Argument(..., help="Model name."),
    alias: str | None = typer.Option(None, "--alias", help="Only this alias's moves."),
    as_json: bool = typer.Option(False, "--json", help="Print the events as JSON."),
    db: Path | None = DbOption,
    runs_dir: Path = RunsDir,
) -> None:
    """Every registration, alias move, refusal and deprecation, oldest first."""
    with _store(db, runs_dir) as store:
        events = store.events(name, alias)
    if as_json:
        typer.echo(json.dumps([e.to_dict() for e in events], indent=2))
        return
    table = Table(title=f"{name}: history")
    for column in ("#", "at", "action", "alias", "from", "to", "weight", "by", "reason"):
        table.add_column(column, overflow="fold")
    for e in events:
        table.add_row(str(e.id), e.at, e.action, e.alias or "-", f"v{e.from_version}" if e.from_version else "-",
                      f"v{e.to_version}" if e.to_version else "-", f"{e.weight:g}" if e.weight is not None else "-",
                      e.actor or "-", escape(e.reason or ""))
    _out().print(table)


@app.command("changelog")
def changelog_cmd(
    name: str = typer.Argument(..., help="Model name."),
    out: Path | None = ChangelogOut,
    db: Path | None = DbOption,
    runs_dir: Path = RunsDir,
) -> None:
    """Each version with metric deltas vs the production version it replaces (paired bootstrap CI on shared
    items), gate results and the data/config changes between them."""
    from tuneforge.atomic import write_text_atomic
    from tuneforge.registry.changelog import changelog

    with _store(db, runs_dir) as store:
        text = changelog(store, name)
    if out:
        write_text_atomic(out, text)
        _out().print(f"change log: {out}")
    else:
        typer.echo(text)


@app.command("dossier")
def dossier_cmd(
    name: str = typer.Argument(..., help="Model name."),
    version: str = typer.Argument(..., help="Version or alias."),
    out: Path = DossierOut,
    db: Path | None = DbOption,
    runs_dir: Path = RunsDir,
) -> None:
    """Release dossier: model card, config, lineage, eval bundle, resources, licenses, rollback plan."""
    from tuneforge.registry.dossier import write_dossier

    with _store(db, runs_dir) as store:
        folder = write_dossier(store, name, version, out)
    _out().print(f"dossier: {folder}")


@app.command("verify")
def verify_cmd(
    name: str = typer.Argument(..., help="Model name."),
    version: str = typer.Argument(..., help="Version or alias."),
    db: Path | None = DbOption,
    runs_dir: Path = RunsDir,
) -> None:
    """Re-hash the version's weights, tokenizer and (still present) data files against the registered hashes."""
    from tuneforge.registry.content import verify
    from tuneforge.registry.store import RegistryError

    with _store(db, runs_dir) as store:
        record = store.lookup(name, version)
    problems = verify(record)
    if problems:
        raise RegistryError(f"{record.label}: {len(problems)} file(s) differ from the registration: "
                            + "; ".join(problems))
    _out().print(f"{record.label}: every registered file matches its sha256")


@app.command("export-mlflow")
def export_mlflow_cmd(
    name: str = typer.Argument(..., help="Model name."),
    tracking_uri: str = typer.Option(..., "--tracking-uri", help="MLflow tracking URI (http://..., file:..., "
                                                                 "sqlite:///...)."),
    registry_uri: str | None = typer.Option(None, "--registry-uri", help="MLflow model registry URI (default: "
                                                                             "the tracking URI)."),
    experiment: str = typer.Option("tuneforge", "--experiment", help="MLflow experiment name."),
    artifacts: bool = typer.Option(True, "--artifacts/--no-artifacts", help="Upload the weights as artifacts."),
    db: Path | None = DbOption,
    runs_dir: Path = RunsDir,
) -> None:
    """Send every version as an MLflow run (params, metrics, per-step training metrics, artifacts) and register
    it in MLflow's model registry with the same aliases."""
    from tuneforge.registry.mlflow_export import export_to_mlflow

    with _store(db, runs_dir) as store:
        report = export_to_mlflow(store, name, tracking_uri=tracking_uri, registry_uri=registry_uri,
                                  experiment=experiment, upload_artifacts=artifacts)
    out = _out()
    for row in report["versions"]:
        out.print(f"v{row['version']} -> MLflow run {row['run_id']}, model version {row['mlflow_version']}"
                  + (" (already exported)" if row.get("existing") else ""))
    for alias, version in report["aliases"].items():
        out.print(f"alias {alias} -> MLflow version {version}")
