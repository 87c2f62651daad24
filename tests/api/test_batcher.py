"""Group commit: concurrent submits share a transaction, yet each gets its own answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conveyor import errors
from conveyor.api.batcher import SubmitBatcher
from conveyor.kinds.registry import import_kinds
from conveyor.models import JobFilter, NewJob
from conveyor.service import Service
from conveyor.storage import open_storage
from conveyor.store import open_store


def service(tmp_path: Path) -> Service:
    store = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    store.register_kinds(import_kinds(["conveyor.kinds.demo"]).infos())
    return Service(store, open_storage(f"file://{tmp_path / 'files'}"))


def test_concurrent_submits_share_commits(tmp_path: Path) -> None:
    svc = service(tmp_path)

    async def main() -> list[tuple[list[object], bool]]:
        batcher = SubmitBatcher(svc)
        return await asyncio.gather(
            *(batcher.submit([NewJob(kind="noop", tags=["g"])]) for _ in range(50))
        )

    results = asyncio.run(main())
    ids = [jobs[0].id for jobs, _ in results]  # type: ignore[attr-defined]
    assert len(set(ids)) == 50
    assert not any(replay for _, replay in results)
    jobs = svc.list_jobs(JobFilter(tag="g"), limit=100).jobs
    commits = {j.created_at for j in jobs}
    assert len(jobs) == 50
    assert len(commits) < 50  # later arrivals were committed together


def test_one_bad_request_does_not_fail_the_others(tmp_path: Path) -> None:
    svc = service(tmp_path)

    async def main() -> list[object]:
        batcher = SubmitBatcher(svc)
        return await asyncio.gather(
            batcher.submit([NewJob(kind="noop")]),
            batcher.submit([NewJob(kind="noop")]),
            batcher.submit([NewJob(kind="demo.sleep", input={"seconds": -1})]),
            batcher.submit([NewJob(kind="no.such")]),
            batcher.submit([NewJob(kind="noop", idempotency_key="k")]),
            batcher.submit([NewJob(kind="noop", idempotency_key="k")]),
            return_exceptions=True,
        )

    results = asyncio.run(main())
    assert isinstance(results[2], errors.InvalidInputError)
    assert isinstance(results[3], errors.KindNotFoundError)
    ok = [r for i, r in enumerate(results) if i not in (2, 3)]
    assert all(isinstance(r, tuple) for r in ok)
    first, second = results[4], results[5]
    assert isinstance(first, tuple) and isinstance(second, tuple)
    assert first[0][0].id == second[0][0].id
    assert [first[1], second[1]].count(True) == 1  # one created it, the other replayed


def test_store_failure_reaches_every_waiter(tmp_path: Path) -> None:
    svc = service(tmp_path)
    svc.store.close()

    async def main() -> list[object]:
        batcher = SubmitBatcher(svc)
        return await asyncio.gather(
            *(batcher.submit([NewJob(kind="noop")]) for _ in range(3)), return_exceptions=True
        )

    results = asyncio.run(main())
    assert all(isinstance(r, Exception) for r in results), results
