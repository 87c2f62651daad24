"""Schema migrations on PostgreSQL: safe when many processes start at once; `conveyor db`."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner, Result

from conveyor import errors
from conveyor.cli.app import app
from conveyor.store import pg_migrations
from conveyor.store.postgres import PostgresStore
from tests.servers.postgres import PostgresServer

pytestmark = pytest.mark.postgres


def conveyor(*args: str) -> Result:
    """Run the CLI in this process (a subprocess per command would mostly measure imports)."""
    return CliRunner().invoke(app, list(args))


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


def test_db_migrate_and_status_commands(postgres_server: PostgresServer, home: Path) -> None:
    url = postgres_server.create_schema()
    pending = conveyor("db", "status", "--store", url)
    assert pending.exit_code == 3, pending.output
    assert "pending" in pending.output
    first = conveyor("db", "migrate", "--store", url)
    assert first.exit_code == 0, first.output
    assert "applied 0001_initial" in first.output
    assert "applied 0002_event_commit_order" in first.output
    again = conveyor("db", "migrate", "--store", url)
    assert again.exit_code == 0 and "already up to date" in again.output
    assert conveyor("db", "status", "--store", url).exit_code == 0


def test_db_migrate_on_sqlite_and_unreachable_postgres(tmp_path: Path, home: Path) -> None:
    sqlite = conveyor("db", "migrate", "--store", f"sqlite:///{tmp_path / 'c.db'}")
    assert sqlite.exit_code == 0, sqlite.output
    assert (tmp_path / "c.db").exists()
    down = conveyor("db", "migrate", "--store", "postgresql://u@127.0.0.1:1/x")
    assert down.exit_code == 1
    assert "cannot reach PostgreSQL" in down.output
    assert down.exception is None or isinstance(down.exception, SystemExit)
