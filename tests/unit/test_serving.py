"""The unserved-job warning over a real store: set when no live worker serves the kind and
queue, absent (and readable as None) when one does, on jobs fresh from any store path."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from conveyor.cli.remote import LocalService
from conveyor.kinds.registry import import_kinds
from conveyor.models import NewJob, WorkerInfo, utcnow
from conveyor.storage import open_storage
from conveyor.store import open_store


def test_warning_follows_the_live_workers(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    store.register_kinds(import_kinds(["conveyor.kinds.demo"]).infos())
    storage = open_storage(f"file://{tmp_path / 'files'}")
    service = LocalService(store, storage, idempotency_window_s=60)
    alone = service.submit(NewJob(kind="noop"))
    assert alone.warning is not None and "'noop' in queue 'default'" in alone.warning
    now = utcnow()
    worker = WorkerInfo(id="h:1", host="h", pid=1, queues=["default"], kinds=["noop"],
                        concurrency=1, started_at=now, last_seen=now)  # fmt: skip
    store.worker_beat(worker)
    service.serving = type(service.serving)(store.workers)  # forget the cached read
    served = service.submit(NewJob(kind="noop"))
    assert served.warning is None
    assert service.get(served.id).warning is None  # a stored job reads back without one
    # A worker that stopped beating long ago serves nothing.
    stale = worker.model_copy(update={"last_seen": now - timedelta(minutes=5)})
    from conveyor.serving import warning

    assert warning([stale], "noop", "default") is not None
    assert warning([worker], "demo.sleep", "default") is not None  # not one of its kinds
    store.close()
