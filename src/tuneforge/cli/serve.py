"""`tuneforge serve CONFIG|RUN`, `tuneforge serve keys create|list|revoke`, `tuneforge serve feedback export`."""
from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from typer.core import TyperGroup

from tuneforge.errors import ConfigError


class _ServeGroup(TyperGroup):
    """`tuneforge serve TARGET` starts a server; `tuneforge serve keys ...` / `feedback ...` manage its state."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["start", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_ServeGroup, no_args_is_help=True,
                  help="Serve a base model and its adapters behind an OpenAI-compatible API "
                       "(`tuneforge serve CONFIG.yaml` or `tuneforge serve runs/NAME`).")
keys_app = typer.Typer(no_args_is_help=True, help="API keys of a server (stored hashed in its state database).")
feedback_app = typer.Typer(no_args_is_help=True, help="Feedback collected by a server.")
app.add_typer(keys_app, name="keys")
app.add_typer(feedback_app, name="feedback")

TargetArg = typer.Argument(..., help="A serve YAML config or a run directory (zero-config: its base + adapter).")
DatabaseUrlOpt = typer.Option(
    None, "--database-url", envvar="TUNEFORGE_DATABASE_URL",
    help="The server database shared by replicas (postgresql://USER@HOST/DB), instead of the config's "
         "database_url / state_dir/serve.db; the password may come from $PGPASSWORD.")


def resolve_target(target: str, runs_dir: str = "runs", **overrides):
    from tuneforge.serve.config import config_for_run, load_serve_config

    path = Path(target)
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        if any(v is not None for v in overrides.values()):
            cfg = load_serve_config(path)
            return cfg.model_copy(update={k: v for k, v in overrides.items() if v is not None})
        return load_serve_config(path)
    return config_for_run(target, runs_dir, **overrides)


@app.command("start", hidden=True)
def start(
    target: str = TargetArg,
    host: str = typer.Option(None, help="Address to listen on (default 127.0.0.1, this machine only)."),
    port: int = typer.Option(None, help="Port (default 8000; 0 picks a free one)."),
    runs_dir: str = typer.Option("runs", help="Where run names are looked up."),
    database_url: str = DatabaseUrlOpt,
) -> None:
    """Start the server."""
    from tuneforge.integrations.quiet import quiet_third_party_output
    from tuneforge.serve.server import run_server

    quiet_third_party_output()

    run_server(resolve_target(target, runs_dir, host=host, port=port, database_url=database_url),
               announce=typer.echo)


def _store(target: str, runs_dir: str, database_url: str | None):
    from tuneforge.serve.server import open_store

    cfg = resolve_target(target, runs_dir)
    return open_store(cfg.state_dir, cfg.request_log.key_file, database_url=database_url or cfg.database_url)


@keys_app.command("create")
def keys_create(
    target: str = TargetArg,
    name: str = typer.Option(..., help="Who the key is for (shown in `keys list` and the logs)."),
    models: str = typer.Option(None, help="Comma-separated models/adapters this key may use (default: all)."),
    rpm: int = typer.Option(None, min=1, help="Requests per minute."),
    tpm: int = typer.Option(None, min=1, help="Tokens (prompt + max_tokens) per minute."),
    daily_tokens: int = typer.Option(None, min=1, help="Tokens per UTC day (survives restarts)."),
    admin: bool = typer.Option(False, help="An admin key (adapter load/unload, /metrics)."),
    runs_dir: str = typer.Option("runs", help="Where run names are looked up."),
    database_url: str = DatabaseUrlOpt,
) -> None:
    """Create a key and print its secret (shown once; only its hash is stored)."""
    allowed = [m.strip() for m in models.split(",") if m.strip()] if models else None
    key, secret = _store(target, runs_dir, database_url).create_key(name, admin=admin, models=allowed, rpm=rpm, tpm=tpm,
                                                       daily_tokens=daily_tokens)
    typer.echo(f"created {key.id} ({name}); secret (shown once):")
    typer.echo(secret)


@keys_app.command("list")
def keys_list(target: str = TargetArg, runs_dir: str = typer.Option("runs", help="Where run names are looked up."),
              database_url: str = DatabaseUrlOpt) -> None:
    """Keys with their limits, today's tokens and whether they are revoked."""
    store = _store(target, runs_dir, database_url)
    for key in store.list_keys():
        state = "revoked" if key.revoked else "active"
        typer.echo(f"{key.id}  {key.name:<16} {'admin' if key.admin else 'client':<6} {state:<8} "
                   f"models={','.join(key.models) if key.models else '*'} rpm={key.rpm or '-'} tpm={key.tpm or '-'} "
                   f"daily={key.daily_tokens or '-'} used_today={store.tokens_today(key.id)} "
                   f"created={time.strftime('%Y-%m-%d %H:%M', time.gmtime(key.created))}")


@keys_app.command("revoke")
def keys_revoke(target: str = TargetArg, key_id: str = typer.Argument(..., help="The key id (key_...)."),
                runs_dir: str = typer.Option("runs", help="Where run names are looked up."),
                database_url: str = DatabaseUrlOpt) -> None:
    """Revoke a key; requests with it get 401 from then on (no restart needed, on every replica)."""
    if not _store(target, runs_dir, database_url).revoke(key_id):
        raise ConfigError(f"no active key {key_id!r}", hint="`tuneforge serve keys list TARGET` shows the ids")
    typer.echo(f"revoked {key_id}")


@feedback_app.command("export")
def feedback_export(
    target: str = TargetArg,
    out: str = typer.Option(..., help="Folder for chat.jsonl (corrections) and preference.jsonl (preferred "
                            "answers)."),
    runs_dir: str = typer.Option("runs", help="Where run names are looked up."),
    database_url: str = DatabaseUrlOpt,
) -> None:
    """Turn the request log + feedback into training data that `tuneforge data validate` accepts."""
    from tuneforge.atomic import write_text_atomic
    from tuneforge.serve.db.store import export_feedback

    chat, pairs = export_feedback(_store(target, runs_dir, database_url))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("chat.jsonl", chat), ("preference.jsonl", pairs)):
        write_text_atomic(out / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        typer.echo(f"{out / name}: {len(rows)} rows")
