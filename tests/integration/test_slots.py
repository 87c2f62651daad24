"""Many jobs in flight per child (#18), with real worker processes: async and threaded kinds,
per-job timeouts and cancels, crashes, drains, and no job waiting behind a long one."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.kinds.registry import import_kinds
from conveyor.models import JobState, NewJob
from conveyor.service import Service
from conveyor.storage import open_storage
from conveyor.store import open_store
from tests.backends import BACKENDS, Backend
from tests.integration.harness import children, start_worker, stop, wait_for, wait_state
from tests.integration.harness import worker_env as base_env
from tests.integration.ledger import check

pytestmark = pytest.mark.timeout(180)
SHARED = [pytest.param(b, id=b.name, marks=b.marks) for b in BACKENDS if b.shared]


@pytest.fixture(params=SHARED)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL other processes can open, on every shared backend."""
    backend: Backend = request.param
    with backend.prepare(request, tmp_path) as ready:
        yield ready.url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'conveyor.db'}"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return base_env(tmp_path / "home", CONVEYOR_CANCEL_GRACE_S="1", CONVEYOR_GRACE_S="1",
                    CONVEYOR_HEARTBEAT_S="0.2")  # fmt: skip


def open_service(url: str, tmp_path: Path) -> Service:
    store = open_store(url)
    store.register_kinds(import_kinds(["conveyor.kinds.demo", "tests.testkinds"]).infos())
    return Service(store, open_storage(f"file://{tmp_path / 'home' / 'files'}"))


@pytest.fixture
def service(url: str, tmp_path: Path) -> Iterator[Service]:
    opened = open_service(url, tmp_path)
    yield opened
    opened.store.close()


@pytest.fixture
def local(sqlite_url: str, tmp_path: Path) -> Iterator[Service]:
    opened = open_service(sqlite_url, tmp_path)
    yield opened
    opened.store.close()


class Waits:
    """`test.async_wait` / `test.thread_wait` jobs sharing a ledger and a release file."""

    def __init__(self, service: Service, tmp_path: Path) -> None:
        self.service = service
        self.ledger = tmp_path / "ledger.jsonl"
        self.release_file = tmp_path / "release"

    def submit(self, n: int, kind: str = "test.async_wait", **fields: object) -> list[str]:
        inp = {"ledger": str(self.ledger), "release": str(self.release_file)}
        inp.update({k: v for k, v in fields.items() if k in ("ignore_cancel", "steps")})
        job = {k: v for k, v in fields.items() if k not in inp}
        new = [NewJob(kind=kind, input=inp, **job) for _ in range(n)]  # type: ignore[arg-type]
        return [j.id for j in self.service.submit_many(new)]

    def starts(self) -> list[dict[str, object]]:
        import json

        if not self.ledger.exists():
            return []
        lines = self.ledger.read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["ev"] == "start"]

    def wait_started(self, ids: list[str], attempt: int = 1) -> set[int]:
        """Wait until every job in `ids` started attempt `attempt`; return the pids."""
        wanted = set(ids)

        def done() -> set[int] | None:
            seen = [r for r in self.starts() if r["job"] in wanted and r["attempt"] == attempt]
            return {int(str(r["pid"])) for r in seen} if len(seen) >= len(wanted) else None

        pids: set[int] = wait_for(done, timeout=60, what=f"{len(ids)} starts")
        return pids

    def release(self) -> None:
        self.release_file.touch()


def test_kill_9_of_a_child_running_100_async_jobs_retries_every_one(
    service: Service, url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    waits = Waits(service, tmp_path)
    ids = waits.submit(100)
    worker = start_worker(url, tmp_path / "home", "-c", "2", env=env)
    try:
        [pid] = waits.wait_started(ids)  # packed into one child
        os.kill(pid, signal.SIGKILL)
        pids = waits.wait_started(ids, attempt=2)
        assert pid not in pids
        waits.release()
        wait_for(lambda: all(service.get(i).state is JobState.SUCCEEDED for i in ids))
    finally:
        assert stop(worker) == 0
    report = check(service.store, ids, waits.ledger)
    assert report.lost == [] and report.duplicate_completions == []
    assert report.unexplained_duplicates == []
    assert report.attempts == {2: 100}, "every job the child had started is a new attempt"
    for job_id in ids:
        errors = [e.data.get("error", {}) for e in service.store.events(job_id)]
        assert any(err.get("reason") == "worker_lost" for err in errors)


def test_timeout_and_cancel_stop_one_async_job_among_many(
    local: Service, sqlite_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    waits = Waits(local, tmp_path)
    siblings = waits.submit(30)
    [timed] = waits.submit(1, timeout_s=0.5, max_attempts=1)
    [cancelled] = waits.submit(1)
    worker = start_worker(sqlite_url, tmp_path / "home", "-c", "1", env=env)
    try:
        waits.wait_started([*siblings, timed, cancelled])
        failed = wait_state(local.store, timed, [JobState.FAILED])
        assert failed.error is not None and failed.error.reason == "timeout"
        assert failed.error.type == "Timeout"
        local.cancel(cancelled)
        wait_state(local.store, cancelled, [JobState.CANCELLED])
        assert all(local.get(i).state is JobState.RUNNING for i in siblings)
        waits.release()
        for job_id in siblings:
            assert wait_state(local.store, job_id, [JobState.SUCCEEDED]).attempt == 1
    finally:
        assert stop(worker) == 0
    assert len(waits.starts()) == 32, "nothing ran twice: the child was never killed"


def test_an_async_job_ignoring_its_timeout_kills_its_child_and_siblings_are_new_attempts(
    local: Service, sqlite_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    waits = Waits(local, tmp_path)
    siblings = waits.submit(20)
    [stubborn] = waits.submit(1, timeout_s=0.3, ignore_cancel=True, max_attempts=1)
    worker = start_worker(sqlite_url, tmp_path / "home", "-c", "1", env=env)
    try:
        [pid] = waits.wait_started([*siblings, stubborn])
        failed = wait_state(local.store, stubborn, [JobState.FAILED])
        assert failed.error is not None and failed.error.reason == "timeout"
        assert not Path(f"/proc/{pid}/stat").exists() or pid not in children(worker.pid)
        waits.wait_started(siblings, attempt=2)
        waits.release()
        for job_id in siblings:
            job = wait_state(local.store, job_id, [JobState.SUCCEEDED])
            assert job.attempt == 2 and job.result == {"attempt": 2}
    finally:
        assert stop(worker) == 0
    report = check(local.store, siblings, waits.ledger)
    assert report.duplicate_completions == [] and report.unexplained_duplicates == []


def test_a_thread_kinds_timeout_and_cancel(
    local: Service, sqlite_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    waits = Waits(local, tmp_path)
    siblings = waits.submit(2, "test.thread_wait")
    [timed] = waits.submit(1, "test.thread_wait", timeout_s=0.5, max_attempts=1)
    [cancelled] = waits.submit(1, "test.thread_wait")
    worker = start_worker(sqlite_url, tmp_path / "home", "-c", "1", env=env)
    try:
        [pid] = waits.wait_started([*siblings, timed, cancelled])  # 4 threads in one child
        failed = wait_state(local.store, timed, [JobState.FAILED])
        assert failed.error is not None and failed.error.reason == "timeout"
        local.cancel(cancelled)
        wait_state(local.store, cancelled, [JobState.CANCELLED])
        [stubborn] = waits.submit(
            1, "test.thread_wait", timeout_s=0.3, ignore_cancel=True, max_attempts=1
        )
        failed = wait_state(local.store, stubborn, [JobState.FAILED])
        assert failed.error is not None and failed.error.reason == "timeout"
        waits.wait_started(siblings, attempt=2)  # killed with the thread that ignored it
        waits.release()
        for job_id in siblings:
            assert wait_state(local.store, job_id, [JobState.SUCCEEDED]).attempt == 2
    finally:
        assert stop(worker) == 0
    assert pid not in children(worker.pid)


def test_sigterm_drain_with_async_jobs_in_flight(
    local: Service, sqlite_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    waits = Waits(local, tmp_path)
    ids = waits.submit(50)
    worker = start_worker(sqlite_url, tmp_path / "home", "-c", "2", env=env)
    waits.wait_started(ids)
    begun = time.monotonic()
    assert stop(worker) == 0
    assert time.monotonic() - begun < 8, "drain must end after the grace period"
    for job_id in ids:
        job = local.get(job_id)
        assert job.state is JobState.QUEUED, "interrupted by a drain: released, not failed"
        assert job.attempt == 0
    waits.release()
    worker = start_worker(sqlite_url, tmp_path / "home", "-c", "2", "--burst", env=env)
    assert worker.wait(60) == 0
    assert all(local.get(i).state is JobState.SUCCEEDED for i in ids)
    # Jobs that finish within the grace period finish: drain while they run, then release.
    ids = waits.submit(20)
    worker = start_worker(sqlite_url, tmp_path / "home", "-c", "2", env=env)
    waits.wait_started(ids)
    worker.send_signal(signal.SIGTERM)
    waits.release()
    assert worker.wait(30) == 0
    assert all(local.get(i).state is JobState.SUCCEEDED for i in ids)


@pytest.mark.parametrize(
    ("long_kind", "long_input"),
    [
        ("demo.count", {"to": 20, "delay": 1}),
        ("demo.sleep", {"seconds": 20}),
    ],
)
@pytest.mark.parametrize("short_kind", ["noop", "demo.sleep"])
def test_a_short_job_does_not_wait_behind_a_long_one(
    local: Service,
    sqlite_url: str,
    tmp_path: Path,
    env: dict[str, str],
    long_kind: str,
    long_input: dict[str, object],
    short_kind: str,
) -> None:
    long = local.submit(NewJob(kind=long_kind, input=long_input)).id
    worker = start_worker(sqlite_url, tmp_path / "home", "-c", "2", env=env)
    try:
        wait_state(local.store, long, [JobState.RUNNING])
        short_input = {"seconds": 0.05} if short_kind == "demo.sleep" else {}
        # Each kind once first, so the worker has seen how long they run.
        warm = local.submit(NewJob(kind=short_kind, input=short_input)).id
        wait_state(local.store, warm, [JobState.SUCCEEDED])
        submitted = time.monotonic()
        short = local.submit(NewJob(kind=short_kind, input=short_input)).id
        wait_state(local.store, short, [JobState.SUCCEEDED], timeout=10)
        took = time.monotonic() - submitted
        assert took < 1.0, f"the short job took {took:.2f}s behind the long one"
        assert local.get(long).state is JobState.RUNNING
    finally:
        local.cancel(long)
        assert stop(worker) == 0


def test_progress_and_logs_stay_in_order_per_job_under_concurrency(
    local: Service, sqlite_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    waits = Waits(local, tmp_path)
    waits.release()
    ids = waits.submit(40, steps=30)
    worker = start_worker(sqlite_url, tmp_path / "home", "-c", "2", "--burst", env=env)
    assert worker.wait(60) == 0
    for job_id in ids:
        job = local.get(job_id)
        assert job.state is JobState.SUCCEEDED
        assert job.progress is not None and (job.progress.current, job.progress.total) == (30, 30)
        events = local.store.events(job_id)
        lines = [e.data["line"] for e in events if e.type == "log"]
        assert lines == [f"step {i}" for i in range(1, 31)]
        progress = [e.data["current"] for e in events if e.type == "progress"]
        assert progress == sorted(progress) and progress[-1] == 30
        last_update = max(e.seq for e in events if e.type in ("log", "progress"))
        final = next(e for e in events if e.type == "state" and e.data["state"] == "succeeded")
        assert last_update < final.seq, "the last progress lands before the final state"


def test_workers_show_slots_busy_and_total_per_kind(
    local: Service, sqlite_url: str, tmp_path: Path, env: dict[str, str]
) -> None:
    waits = Waits(local, tmp_path)
    ids = waits.submit(7)
    worker = start_worker(sqlite_url, tmp_path / "home", "-c", "2", "--slots", "50", env=env)
    try:
        waits.wait_started(ids)

        def usage() -> dict[str, tuple[int, int, str]] | None:
            workers = local.store.workers()
            if not workers:
                return None
            found = {u.kind: (u.busy, u.total, u.runs) for u in workers[0].slots}
            return found if found["test.async_wait"][0] == 7 else None

        slots = wait_for(usage, timeout=30)
        assert slots["test.async_wait"] == (7, 50, "async")
        assert slots["test.thread_wait"] == (0, 8, "thread")  # 4 threads x 2 children
        assert slots["noop"] == (0, 2, "process")
        [info] = local.store.workers()
        assert info.busy == 7 and sorted(info.running) == sorted(ids)
    finally:
        waits.release()
        assert stop(worker) == 0
