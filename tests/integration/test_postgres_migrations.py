"""Schema migrations on PostgreSQL: safe when many processes start at once; `conveyor db`."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from conveyor import errors
from conveyor.store import pg_migrations
from conveyor.store.postgres import PostgresStore
from tests.integration.harness import ROOT, worker_env
from tests.servers.postgres import PostgresServer

pytestmark = pytest.mark.postgres


def conveyor(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args], capture_output=True, text=True,
        env=worker_env(home), cwd=ROOT, timeout=60,
    )  # fmt: skip


def test_many_processes_migrating_at_once_apply_each_migration_once(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_schema()

    def open_and_close(_: int) -> int:
        store = PostgresStore.from_url(url)  # migrates on open
        try:
            return store.schema_version()[0]
        finally:
            store.close()

    with ThreadPoolExecutor(6) as pool:
        versions = list(pool.map(open_and_close, range(6)))
    latest = pg_migrations.latest_version()
    assert versions == [latest] * 6
    with psycopg.connect(url) as conn:
        rows = conn.execute(f"SELECT version FROM {pg_migrations.TABLE} ORDER BY 1").fetchall()
    assert [r[0] for r in rows] == [m.version for m in pg_migrations.available()]


def test_newer_schema_is_refused(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_schema()
    PostgresStore.from_url(url).close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {pg_migrations.TABLE} (version, name) VALUES (9999, 'future')")
    with pytest.raises(errors.ConfigurationError, match="newer than this conveyor"):
        PostgresStore.from_url(url)


def test_db_migrate_and_status_commands(postgres_server: PostgresServer, tmp_path: Path) -> None:
    url = postgres_server.create_schema()
    home = tmp_path / "home"
    pending = conveyor("db", "status", "--store", url, home=home)
    assert pending.returncode == 3, pending.stderr
    assert "pending" in pending.stdout
    first = conveyor("db", "migrate", "--store", url, home=home)
    assert first.returncode == 0, first.stderr
    assert "applied 0001_initial" in first.stdout
    again = conveyor("db", "migrate", "--store", url, home=home)
    assert again.returncode == 0 and "already up to date" in again.stdout
    assert conveyor("db", "status", "--store", url, home=home).returncode == 0


def test_db_migrate_on_sqlite_and_unreachable_postgres(tmp_path: Path) -> None:
    home = tmp_path / "home"
    sqlite = conveyor("db", "migrate", "--store", f"sqlite:///{tmp_path / 'c.db'}", home=home)
    assert sqlite.returncode == 0, sqlite.stderr
    assert (tmp_path / "c.db").exists()
    down = conveyor("db", "migrate", "--store", "postgresql://u@127.0.0.1:1/x", home=home)
    assert down.returncode == 1
    assert "cannot reach PostgreSQL" in down.stderr
    assert "Traceback" not in down.stderr
