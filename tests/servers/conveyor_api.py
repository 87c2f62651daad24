"""A conveyor API served in the test process, on a fresh SQLite store, with a handle to it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conveyor.api.app import create_app
from conveyor.settings import Settings
from conveyor.store import Store, open_store
from tests.servers.http import serve_in_thread


@dataclass(frozen=True)
class ServedApi:
    home: Path  # CONVEYOR_HOME for workers started beside it
    store_url: str
    url: str
    store: Store  # the test's own handle on the API's store


@contextmanager
def sqlite_api_in_thread(tmp: Path) -> Iterator[ServedApi]:
    """uvicorn in a thread serving `create_app` on `tmp/conveyor.db`, files under `tmp/home`."""
    home = tmp / "home"
    store_url = f"sqlite:///{tmp / 'conveyor.db'}"
    settings = Settings(home=home, store=store_url, storage=f"file://{home / 'files'}")
    with serve_in_thread(create_app(settings)) as url:
        store = open_store(store_url)
        try:
            yield ServedApi(home, store_url, url, store)
        finally:
            store.close()
