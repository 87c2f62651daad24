"""A job cancelled while running, then retried, runs again in the same worker process: a
child remembers a cancel for one dispatch of a job, not for the job's id forever."""

from __future__ import annotations

from pathlib import Path

from conveyor.kinds.registry import import_kinds
from conveyor.models import JobState, NewJob
from conveyor.service import Service
from conveyor.storage import open_storage
from conveyor.store import open_store
from tests.integration.harness import start_worker, stop, wait_for, worker_env


def test_a_retried_job_runs_again_after_a_cancel(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'conveyor.db'}"
    store = open_store(url)
    store.register_kinds(import_kinds(["conveyor.kinds.demo"]).infos())
    service = Service(store, open_storage(f"file://{tmp_path / 'files'}"))
    job = service.submit(NewJob(kind="demo.sleep", input={"seconds": 60}))
    worker = start_worker(url, tmp_path / "home", "-c", "1", env=worker_env(tmp_path / "home"))
    try:
        for attempt in (1, 2):
            wait_for(lambda: service.get(job.id).state is JobState.RUNNING, 60, what="running")
            service.cancel(job.id)
            # demo.sleep reports progress, so it stops cooperatively: the same child lives on.
            wait_for(lambda: service.get(job.id).state is JobState.CANCELLED, 60,
                     what=f"cancelled (attempt {attempt})")  # fmt: skip
            if attempt == 1:
                service.retry(job.id)
        starts = [e.data.get("attempt") for e in service.events(job.id)
                  if e.type == "state" and e.data.get("state") == "running"
                  and not e.data.get("cancel_requested")]  # fmt: skip
        assert len(starts) == 2, starts
    finally:
        stop(worker)
        store.close()
