"""`tuneforge monitor drift`: production prompts (a server's request log) vs the training data."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from tuneforge.errors import DataError

app = typer.Typer(no_args_is_help=True, help="Watch a served model: drift of production prompts vs training data.")


@app.command("drift")
def drift(
    log: str = typer.Option(..., help="The server's request log: its serve.db, its database URL "
                            "(postgresql://USER@HOST/DB), or the serve config / run it served."),
    train: str = typer.Option(..., help="The training data (any format `tuneforge data validate` reads)."),
    out: str = typer.Option("drift", help="Folder for drift.json and drift.html."),
    max_ks: float = typer.Option(0.3, help="Alert when the prompt-length KS statistic is above this."),
    max_novel_share: float = typer.Option(0.5, help="Alert when more than this share of prompts is n-gram novel."),
    embedding_model: str = typer.Option("all-minilm-l6-v2", help="Embedding model for the embedding-distance "
                                        "shift (catalog name or sentence-transformers folder); 'none' skips it."),
    max_embedding_distance: float = typer.Option(0.05, help="Alert when the prompts' mean embeddings are further "
                                                 "apart than this cosine distance (and the MMD test agrees)."),
    runs_dir: str = typer.Option("runs", help="Where run names are looked up."),
) -> None:
    """Compare production prompts with the training prompts; exit 1 on a drift alert (for alerting), 0 otherwise."""
    from tuneforge.atomic import write_json_atomic, write_text_atomic
    from tuneforge.data.formats import load_dataset_file
    from tuneforge.data.text import prompt_text
    from tuneforge.serve.db.store import Store
    from tuneforge.serve.db.store_schema import is_url
    from tuneforge.serve.drift import compare, html_report, logged_prompts

    db, cipher = (log if is_url(log) else Path(log)), None
    if not is_url(log) and not (db.is_file() and db.suffix == ".db"):
        from tuneforge.cli.serve import resolve_target
        from tuneforge.serve.db.store import load_cipher
        from tuneforge.serve.server import DB_FILE

        cfg = resolve_target(log, runs_dir)
        db = cfg.database_url or Path(cfg.state_dir) / DB_FILE
        cipher = load_cipher(cfg.request_log.key_file) if cfg.request_log.key_file else None
    if isinstance(db, Path) and not db.is_file():
        raise DataError(f"{db}: no request log there", hint="pass --log SERVE.db, or the config/run that was served")
    with Store(db, cipher) as store:
        production = logged_prompts(store.requests())
        db = store.where  # a URL as it may be shown (no password)
    training = [prompt_text(row) for row in load_dataset_file(train).rows]
    if not production:
        raise DataError(f"{db}: the request log has no successful requests yet")
    embedder, unavailable = None, None
    if embedding_model.lower() != "none":
        from tuneforge.errors import TuneforgeError
        from tuneforge.rag.embed import Embedder

        try:
            embedder = Embedder(embedding_model)
        except (TuneforgeError, ImportError) as exc:  # offline first use: the other checks still run
            unavailable = f"not computed: embedding model {embedding_model!r} unavailable ({exc})"
            typer.echo(unavailable, err=True)
    result, prod_len, train_len = compare(production, training, max_ks=max_ks, max_novel_share=max_novel_share,
                                          embedder=embedder, max_embedding_distance=max_embedding_distance)
    if unavailable:
        result.embedding_shift = unavailable
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    from dataclasses import asdict

    write_json_atomic(folder / "drift.json", asdict(result))
    write_text_atomic(folder / "drift.html", html_report(result, prod_len, train_len))
    typer.echo(json.dumps(asdict(result), indent=2))
    typer.echo(f"report: {folder / 'drift.html'}")
    if result.alert:
        raise typer.Exit(1)
