"""A throwaway PostgreSQL cluster for tests: initdb into a temporary folder, start it on a free 127.0.0.1 port
(and a unix socket in that folder), one fresh database per test, stopped and deleted at the end.

The binaries come from the Debian package (/usr/lib/postgresql/VERSION/bin; `python3 dev.py setup` installs it when
run as root on Debian). Without them the fixture fails, it does not skip: the shared-database tests are part of the
suite. initdb refuses to run as root, so as root the cluster runs as the `postgres` user the package creates.

    from tests.pg import pg_cluster, pg_url  # noqa: F401  (fixtures)
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

SUPERUSER = "tuneforge"


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin folder (the one holding initdb and pg_ctl)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    if not found:
        on_path = shutil.which("initdb")
        if on_path and shutil.which("pg_ctl"):
            return Path(on_path).parent
        pytest.fail("no PostgreSQL binaries (no /usr/lib/postgresql/*/bin/initdb, no initdb on PATH): the shared "
                    "serve database tests need a local PostgreSQL. Install it: `python3 dev.py setup` as root on "
                    "Debian does, or `apt-get install --no-install-recommends postgresql`", pytrace=False)
    return Path(found[-1]).parent


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(cmd: list[str], user: str | None, timeout: float = 60) -> None:
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


@contextlib.contextmanager
def postgres_cluster():
    """Yield the URL (postgresql+psycopg://tuneforge@127.0.0.1:PORT/postgres) of a fresh cluster."""
    bin_dir = postgres_bin()
    user = None
    as_root = os.geteuid() == 0
    # As root the cluster's user must reach the folder: /tmp, not a $TMPDIR that may sit in root's home.
    root = Path(tempfile.mkdtemp(prefix="tuneforge-pg-", dir="/tmp" if as_root else None))
    if as_root:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root, and initdb refuses root, but there is no `postgres` user to run the "
                        "cluster as (the Debian package creates it)", pytrace=False)
        user = "postgres"
        os.chown(root, account.pw_uid, account.pw_gid)
    data, port = root / "data", _free_port()
    started = False
    try:
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
              "--no-sync", "--no-instructions"], user)
        for attempt in range(3):  # the free port may be taken between the probe and the start
            options = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root} -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
            try:
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-o", options,
                      "-w", "-t", "60", "start"], user, timeout=90)
                started = True
                break
            except RuntimeError:
                if attempt == 2:
                    log = root / "server.log"
                    raise RuntimeError("PostgreSQL did not start:\n" + (log.read_text() if log.is_file() else ""))
                port = _free_port()
                time.sleep(0.2)
        yield f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{port}/postgres"
    finally:
        if started:
            with contextlib.suppress(Exception):
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], user)
        shutil.rmtree(root, ignore_errors=True)


def create_database(admin_url: str) -> str:
    """A new empty database on the cluster; its URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database,
                         autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return url.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_cluster():
    with postgres_cluster() as url:
        yield url


@pytest.fixture()
def pg_url(pg_cluster) -> str:
    """A fresh, empty database of the session's throwaway cluster."""
    return create_database(pg_cluster)
