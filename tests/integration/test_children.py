"""Child jobs on a real worker: a handler spawns, waits without a slot, and resumes in its
kind's continuation with the children's outcomes (worker/continuation.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.kinds.registry import import_kinds
from conveyor.models import JobFilter, JobState, NewJob
from conveyor.service import Service
from conveyor.storage import open_storage
from conveyor.store import Store, open_store
from tests.backends import Backend
from tests.integration.harness import start_worker, stop, wait_state, worker_env

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def url(backend: Backend) -> str:
    if not backend.shared:
        pytest.skip("workers need a store other processes can open")
    return backend.url


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    store = open_store(url)
    store.register_kinds(import_kinds(["conveyor.kinds.demo", "tests.testkinds"]).infos())
    yield store
    store.close()


def submit(store: Store, tmp_path: Path, **input: object) -> str:
    service = Service(store, open_storage(f"file://{tmp_path / 'files'}"))
    return service.submit(NewJob(kind="test.fanout", input=input)).id


def run_worker(url: str, tmp_path: Path, store: Store, job_id: str) -> None:
    worker = start_worker(url, tmp_path / "home", "-c", "2", "--burst",
                          env=worker_env(tmp_path / "home"))  # fmt: skip
    try:
        wait_state(store, job_id, {JobState.SUCCEEDED, JobState.FAILED}, timeout=90)
    finally:
        stop(worker)


def test_fan_out_and_in_with_outcomes_in_spawn_order(
    url: str, store: Store, tmp_path: Path
) -> None:
    job_id = submit(store, tmp_path, n=300, fail=[7])
    run_worker(url, tmp_path, store, job_id)
    job = store.get(job_id)
    assert job.state is JobState.SUCCEEDED, job.error
    assert job.result["succeeded"] == 299
    assert job.result["failed"] == ["PermanentError"]
    assert job.result["results"] == [None if i == 7 else i for i in range(300)]
    assert job.result["attempt"] == 1, "waiting used no attempt"
    states = [e.data["state"] for e in store.events(job_id) if e.type == "state"]
    assert states == ["queued", "running", "blocked", "queued", "running", "succeeded"]
    kids = store.list_jobs(JobFilter(parent_id=job_id), None, 1000).jobs
    assert len(kids) == 300 and all(k.tags == ["fan"] for k in kids)


def test_a_continuation_sees_only_its_own_round(url: str, store: Store, tmp_path: Path) -> None:
    job_id = submit(store, tmp_path, n=4, rounds=2)
    run_worker(url, tmp_path, store, job_id)
    job = store.get(job_id)
    assert job.state is JobState.SUCCEEDED, job.error
    assert (job.result["round"], job.result["results"]) == (2, [100, 101, 102, 103])


def test_spawning_without_waiting_fails_the_job(url: str, store: Store, tmp_path: Path) -> None:
    job_id = submit(store, tmp_path, n=2, spawn_only=True)
    run_worker(url, tmp_path, store, job_id)
    job = store.get(job_id)
    assert job.state is JobState.FAILED
    assert "wait_for_children" in job.error.message
    assert store.list_jobs(JobFilter(parent_id=job_id)).jobs == []
