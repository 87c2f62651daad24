"""The worker supervisor with real processes: crashes, timeouts, cancels, drains, poison pills."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.models import JobState, NewJob
from conveyor.service import Service
from conveyor.storage import open_storage
from conveyor.store import Store, open_store
from tests.integration.harness import (
    start_worker,
    stop,
    wait_for,
    wait_state,
    worker_env,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return worker_env(tmp_path / "home", CONVEYOR_CANCEL_GRACE_S="0.5", CONVEYOR_GRACE_S="1",
                      CONVEYOR_HEARTBEAT_S="0.2")  # fmt: skip


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'home' / 'conveyor.db'}"


@pytest.fixture
def service(url: str, tmp_path: Path) -> Iterator[Service]:
    from conveyor.kinds.registry import import_kinds

    store = open_store(url)
    store.register_kinds(import_kinds(["conveyor.kinds.demo", "tests.testkinds"]).infos())
    yield Service(store, open_storage(f"file://{tmp_path / 'home' / 'files'}"))
    store.close()


def submit(service: Service, kind: str, **fields: object) -> str:
    return service.submit(NewJob(kind=kind, **fields)).id  # type: ignore[arg-type]


def started(directory: Path, name: str, attempt: int = 1) -> dict[str, int]:
    marker = directory / f"{name}.{attempt}.started"
    data: dict[str, int] = wait_for(lambda: marker.exists() and json.loads(marker.read_text()))
    return data


def state_events(store: Store, job_id: str, state: str) -> int:
    return sum(1 for e in store.events(job_id) if e.type == "state" and e.data["state"] == state)


def test_killed_child_job_is_retried_and_completes(
    service: Service, url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    job_id = submit(service, "test.block", input={"dir": str(tmp_path)})
    worker = start_worker(url, tmp_path / "home", "-c", "2", env=env)
    try:
        os.kill(started(tmp_path, "job")["pid"], signal.SIGKILL)
        started(tmp_path, "job", attempt=2)
        (tmp_path / "release").touch()
        job = wait_state(service.store, job_id, [JobState.SUCCEEDED])
        assert job.attempt == 2
        assert job.result == {"attempt": 2}
        errors = [e.data.get("error", {}) for e in service.store.events(job_id)]
        assert any(err.get("reason") == "worker_lost" for err in errors)
    finally:
        assert stop(worker) == 0


def test_timeout_kills_the_job_and_the_worker_goes_on(
    service: Service, url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    hung = submit(service, "test.hang", input={"dir": str(tmp_path)}, timeout_s=0.5)
    worker = start_worker(url, tmp_path / "home", "-c", "1", env=env)
    try:
        job = wait_state(service.store, hung, [JobState.FAILED])
        assert job.error is not None and job.error.reason == "timeout"
        after = submit(service, "noop")
        assert wait_state(service.store, after, [JobState.SUCCEEDED]).attempt == 1
    finally:
        assert stop(worker) == 0


def test_cancel_stops_a_running_job(
    service: Service, url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    hung = submit(service, "test.hang", input={"dir": str(tmp_path)})
    polite = submit(service, "demo.sleep", input={"seconds": 60})
    worker = start_worker(url, tmp_path / "home", "-c", "2", env=env)
    try:
        pid = started(tmp_path, "job")["pid"]
        wait_state(service.store, polite, [JobState.RUNNING])
        begun = time.monotonic()
        service.cancel(polite)
        service.cancel(hung)
        assert wait_state(service.store, polite, [JobState.CANCELLED]).state is JobState.CANCELLED
        assert wait_state(service.store, hung, [JobState.CANCELLED]).state is JobState.CANCELLED
        assert time.monotonic() - begun < 10
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=10)
    finally:
        assert stop(worker) == 0


def test_sigterm_drains_and_releases_unfinished_jobs(
    service: Service, url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    a = submit(service, "test.block", input={"dir": str(tmp_path), "name": "a"})
    b = submit(service, "test.block", input={"dir": str(tmp_path), "name": "b"})
    waiting = submit(service, "noop", delay_s=0)
    worker = start_worker(url, tmp_path / "home", "-c", "2", env=env)
    started(tmp_path, "a")
    started(tmp_path, "b")
    begun = time.monotonic()
    assert stop(worker) == 0
    assert time.monotonic() - begun < 8, "drain must end after the grace period"
    for job_id in (a, b):
        job = service.get(job_id)
        assert job.state is JobState.QUEUED, "interrupted by a drain: released, not failed"
        assert job.attempt == 0
    assert service.get(waiting).state in (JobState.QUEUED, JobState.SUCCEEDED)
    (tmp_path / "release").touch()
    worker = start_worker(url, tmp_path / "home", "-c", "2", "--burst", env=env)
    assert worker.wait(60) == 0
    assert service.get(a).state is JobState.SUCCEEDED
    assert service.get(b).state is JobState.SUCCEEDED


def test_poison_pill_runs_max_attempts_then_fails_worker_lost(
    service: Service, url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    pill = submit(service, "demo.crash", max_attempts=3)
    normal = [submit(service, "noop") for _ in range(50)]
    worker = start_worker(url, tmp_path / "home", "-c", "2", "--burst", env=env)
    assert worker.wait(90) == 0
    job = service.get(pill)
    assert job.state is JobState.FAILED
    assert job.error is not None and job.error.reason == "worker_lost"
    assert job.attempt == 3
    assert state_events(service.store, pill, "running") == 3
    for job_id in normal:
        assert service.get(job_id).state is JobState.SUCCEEDED
        assert state_events(service.store, job_id, "succeeded") == 1


def test_handler_errors_fail_only_their_job(
    service: Service, url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    bad = submit(service, "demo.fail", input={"message": "kaput"}, max_attempts=2, backoff_s=0)
    flaky = submit(service, "demo.fail", input={"succeed_on_attempt": 2}, backoff_s=0)
    permanent = submit(service, "demo.fail", input={"permanent": True}, max_attempts=5)
    good = submit(service, "demo.count", input={"to": 3, "delay": 0, "write_file": True})
    worker = start_worker(url, tmp_path / "home", "-c", "2", "--burst", env=env)
    assert worker.wait(60) == 0
    failed = service.get(bad)
    assert failed.state is JobState.FAILED and failed.attempt == 2
    assert failed.error is not None
    assert failed.error.type == "RuntimeError" and failed.error.message == "kaput"
    assert "raise RuntimeError" in (failed.error.traceback or "")
    assert service.get(flaky).result == {"attempt": 2}
    assert service.get(permanent).attempt == 1
    done = service.get(good)
    assert done.result == {"total": 3, "sum": 6}
    assert done.progress is not None and done.progress.current == 3
    assert [f["name"] for f in service.files(good)] == ["numbers.txt"]
    logs = [e.data["line"] for e in service.store.events(good) if e.type == "log"]
    assert logs == ["step 1 of 3", "step 2 of 3", "step 3 of 3"]


def test_drain_request_record_stops_the_worker(
    service: Service, url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    worker = start_worker(url, tmp_path / "home", "-c", "1", env=env)
    try:
        [info] = wait_for(lambda: service.store.workers())
        service.store.put_record("worker_commands", info.id, {"command": "drain", "by": "test"})
        assert worker.wait(30) == 0
        assert service.store.get_record("worker_commands", info.id) is None
        assert service.store.workers() == []
    finally:
        stop(worker)


def test_worker_claims_only_kinds_it_can_run(
    service: Service, url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    foreign = submit(service, "test.block", input={"dir": str(tmp_path)})
    mine = submit(service, "noop")
    demo_only = {**env, "CONVEYOR_IMPORTS": "conveyor.kinds.demo"}
    worker = start_worker(url, tmp_path / "home", "-c", "1", "--burst", env=demo_only)
    assert worker.wait(60) == 0
    assert service.get(mine).state is JobState.SUCCEEDED
    assert service.get(foreign).state is JobState.QUEUED, "left for a worker that knows it"


def test_worker_record_stays_fresh_while_jobs_report_progress(
    service: Service, url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    job_id = submit(service, "demo.sleep", input={"seconds": 30})
    worker = start_worker(url, tmp_path / "home", "-c", "1", env=env)
    try:
        wait_state(service.store, job_id, [JobState.RUNNING])
        wait_for(lambda: (p := service.get(job_id).progress) is not None and p.current > 0)
        [info] = wait_for(lambda: [w for w in service.store.workers() if w.running == [job_id]])
        first_seen = info.last_seen
        wait_for(lambda: service.store.workers()[0].last_seen > first_seen)
    finally:
        service.cancel(job_id)
        assert stop(worker) == 0
