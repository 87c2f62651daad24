"""Versioned plain-SQL migrations, shared by the SQL stores.

A store's migrations are the files `sql/<dialect>/NNNN_name.sql`, applied in order; each store
applies them in its own transactions and records the version it reached (PostgreSQL in a
table, SQLite in `PRAGMA user_version`). A shipped migration is never edited: a change is a new
file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from conveyor import errors

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available(dialect: str) -> list[Migration]:
    """Every migration of `dialect` ("postgres", "sqlite") shipped with this conveyor, oldest
    first."""
    folder = resources.files("conveyor.store").joinpath(f"sql/{dialect}")
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise errors.ConfigurationError(f"two {dialect} migrations share a version number")
    return found
