"""Job stores, chosen by URL: `sqlite:///path`, `memory://`, `postgresql://…`, `redis://…`."""

from __future__ import annotations

from conveyor import errors
from conveyor.clock import Clock
from conveyor.store.base import Beat, BeatStatus, JobSpec, Settlement, Store
from conveyor.store.rules import Outcome

__all__ = ["Beat", "BeatStatus", "JobSpec", "Outcome", "Settlement", "Store", "open_store"]


def open_store(url: str, clock: Clock | None = None) -> Store:
    """Open the store a URL names, importing its backend only when used.

    `clock` replaces the store's own clock (tests); by default SQLite uses this machine's time
    and server stores use the server's, so worker clock skew cannot expire a lease early.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else url.partition(":")[0].lower()
    match scheme:
        case "sqlite" | "memory":
            from conveyor.store.sqlite import SqliteStore

            return SqliteStore.from_url(url, clock=clock)
        case "postgres" | "postgresql":
            from conveyor.store.postgres import PostgresStore  # type: ignore[import-not-found,unused-ignore]

            store: Store = PostgresStore.from_url(url, clock=clock)
            return store
        case "redis" | "rediss" | "unix":
            from conveyor.store.redis import RedisStore  # type: ignore[import-not-found,unused-ignore]

            store = RedisStore.from_url(url, clock=clock)
            return store
    raise errors.ConfigurationError(
        f"unknown store {url!r}; use sqlite:///path.db, postgresql://…, redis://… or memory://"
    )
