"""What every ledger scenario needs: a service on the shared store, ledger jobs, a drain check."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from conveyor.kinds.registry import import_kinds
from conveyor.models import JobFilter, JobState, NewJob
from conveyor.service import Service
from conveyor.storage import open_storage
from conveyor.store import open_store

#: libfaketime's preload library (Debian package `faketime`, installed by `make chaos`).
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


def open_service(store_url: str, tmp_path: Path) -> Service:
    """A service on the store, with the kinds of the test workers registered."""
    store = open_store(store_url)
    store.register_kinds(import_kinds(["conveyor.kinds.demo", "tests.testkinds"]).infos())
    return Service(store, open_storage(f"file://{tmp_path / 'files'}"))


def submit_ledger(
    service: Service, ledger: Path, durations_ms: Sequence[float], **job: object
) -> list[str]:
    """Submit one `test.ledger` job per duration, in batches of 500; return their ids."""
    ids: list[str] = []
    for start in range(0, len(durations_ms), 500):
        batch = [
            NewJob(kind="test.ledger", input={"ledger": str(ledger), "ms": ms}, **job)
            for ms in durations_ms[start : start + 500]
        ]
        ids += [j.id for j in service.submit_many(batch)]
    return ids


def all_finished(service: Service) -> bool:
    """No job is waiting or running any more."""
    waiting = service.list_jobs(
        JobFilter(state=[JobState.QUEUED, JobState.SCHEDULED, JobState.RUNNING]), limit=1
    )
    return not waiting.jobs


class Producer:
    """Submits batches over the HTTP API, one `Idempotency-Key` per batch, retrying a batch
    (transport errors and non-2xx answers alike) until it is acknowledged or the deadline."""

    def __init__(self, api: str) -> None:
        self.api = api
        self.ids: list[str] = []
        self.statuses: Counter[str] = Counter()  # every answer or transport error seen
        self.lock = threading.Lock()

    def submit(self, jobs: list[dict[str, Any]], deadline: float) -> bool:
        """Submit one batch; True once acknowledged (its ids are in `self.ids`)."""
        key = str(uuid.uuid4())
        with httpx.Client(base_url=self.api, timeout=10) as http:
            while time.monotonic() < deadline:
                try:
                    answer = http.post("/v1/jobs", json={"jobs": jobs},
                                       headers={"Idempotency-Key": key})  # fmt: skip
                    seen = str(answer.status_code)
                except httpx.TransportError as exc:
                    answer, seen = None, type(exc).__name__
                with self.lock:
                    self.statuses[seen] += 1
                if answer is not None and answer.status_code in (200, 201):
                    with self.lock:
                        self.ids += [j["id"] for j in answer.json()["jobs"]]
                    return True
                time.sleep(0.1)  # the client's retry pause
        return False

    def errors(self) -> dict[str, int]:
        """What the client saw besides acknowledgements."""
        return {k: v for k, v in self.statuses.items() if k not in ("200", "201")}

    @staticmethod
    def in_thread(work: Callable[[], object]) -> threading.Thread:
        thread = threading.Thread(target=work, daemon=True, name="producer")
        thread.start()
        return thread
