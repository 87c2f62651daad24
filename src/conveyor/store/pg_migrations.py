"""Versioned plain-SQL migrations for the PostgreSQL store.

Migrations are the files `sql/postgres/NNNN_name.sql`, applied in order, each in its own
transaction together with its row in `conveyor_schema_migrations`. The whole run holds a
session advisory lock, so any number of processes starting at once are safe: one applies, the
others wait and then find nothing left to do.
"""

from __future__ import annotations

from typing import Any

import psycopg

from conveyor import errors
from conveyor.store.migrations import Migration
from conveyor.store.migrations import available as _available

__all__ = [
    "LOCK_KEY", "TABLE", "Migration", "available", "current_version", "latest_version", "migrate"
]  # fmt: skip

TABLE = "conveyor_schema_migrations"
#: pg_advisory_lock key: "conveyor" in ASCII, so it will not collide with an application's.
LOCK_KEY = 0x636F6E7665796F72


def available() -> list[Migration]:
    """Every PostgreSQL migration shipped with this conveyor, oldest first."""
    return _available("postgres")


def latest_version() -> int:
    return max((m.version for m in available()), default=0)


def current_version(conn: psycopg.Connection[Any]) -> int:
    """The schema version of the database (0 when conveyor never ran there)."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,)).fetchone()
    if row is None or not row[0]:
        return 0
    row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {TABLE}").fetchone()
    return 0 if row is None else int(row[0])


def migrate(conn: psycopg.Connection[Any]) -> list[Migration]:
    """Apply pending migrations; return those this call applied. `conn` must be autocommit."""
    migrations = available()
    latest = migrations[-1].version if migrations else 0
    version = current_version(conn)
    _check_not_newer(version, latest)
    if version == latest:
        return []
    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (version integer PRIMARY KEY,"
            " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        version = current_version(conn)  # another process may have migrated meanwhile
        _check_not_newer(version, latest)
        applied = []
        for migration in migrations:
            if migration.version <= version:
                continue
            with conn.transaction():
                conn.execute(migration.sql.encode())
                conn.execute(
                    f"INSERT INTO {TABLE} (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
            applied.append(migration)
        return applied
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


def _check_not_newer(version: int, latest: int) -> None:
    if version > latest:
        raise errors.ConfigurationError(
            f"the database has conveyor schema version {version}, newer than this conveyor"
            f" knows ({latest}); upgrade conveyor"
        )
