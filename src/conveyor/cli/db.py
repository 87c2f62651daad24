"""`conveyor db migrate|status`: bring a store's schema up to date, or show where it is.

PostgreSQL applies the versioned SQL files under `store/sql/postgres/` under an advisory lock
(safe from many hosts at once); SQLite migrates when it is opened; Redis has no schema, so
there it only checks the server answers. `conveyor up` and workers migrate on start as well.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import typer

from conveyor import errors
from conveyor.cli.output import console, err

if TYPE_CHECKING:  # psycopg is imported only for a PostgreSQL store
    from conveyor.store.postgres import PostgresStore

app = typer.Typer(help="Store schema: migrate it, show its version.", no_args_is_help=True)

StoreOpt = Annotated[
    str | None, typer.Option("--store", help="Store URL (default: CONVEYOR_STORE or local file).")
]


def _url(store: str | None) -> str:
    from conveyor.settings import Settings

    return (Settings(store=store) if store else Settings()).store_url


def _scheme(url: str) -> str:
    return url.partition("://")[0].lower() if "://" in url else url.partition(":")[0].lower()


def _fail(exc: errors.ConveyorError) -> typer.Exit:
    err.print(f"[red]error:[/] {exc}")
    return typer.Exit(1)


@contextlib.contextmanager
def _postgres(url: str) -> Iterator[PostgresStore]:
    from conveyor.store.postgres import PostgresStore

    pg = PostgresStore.from_url(url, migrate=False)
    try:
        yield pg
    finally:
        pg.close()


def _ping(url: str) -> None:
    from conveyor.store import open_store

    opened = open_store(url)  # SQLite migrates on open; Redis keeps no schema
    try:
        opened.ping()
    finally:
        opened.close()


@app.command("migrate")
def migrate(store: StoreOpt = None) -> None:
    """Apply pending schema migrations (safe to run from several hosts at once)."""
    url = _url(store)
    try:
        if _scheme(url) in ("postgres", "postgresql"):
            with _postgres(url) as pg:
                applied = pg.migrate()
                version, _ = pg.schema_version()
            for migration in applied:
                console.print(f"applied {migration.version:04d}_{migration.name}")
            state = "migrated" if applied else "already up to date"
            console.print(f"PostgreSQL schema {state} (version {version})")
            return
        _ping(url)
        console.print(f"{_scheme(url)} store ready: {url}")
    except errors.ConveyorError as exc:
        raise _fail(exc) from exc


@app.command("status")
def status(store: StoreOpt = None) -> None:
    """Show the store's schema version and whether migrations are pending."""
    url = _url(store)
    try:
        if _scheme(url) in ("postgres", "postgresql"):
            with _postgres(url) as pg:
                version, latest = pg.schema_version()
            pending = latest - version
            console.print(f"PostgreSQL schema version {version} of {latest}"
                          + (f" ({pending} pending: run `conveyor db migrate`)" if pending else
                             " (up to date)"))  # fmt: skip
            if pending:
                raise typer.Exit(3)
            return
        _ping(url)
        console.print(f"{_scheme(url)} store up to date: {url}")
    except errors.ConveyorError as exc:
        raise _fail(exc) from exc
