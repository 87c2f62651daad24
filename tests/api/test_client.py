"""`conveyor.Client` / `AsyncClient` against a real API with a real worker."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import pytest

import conveyor
from conveyor import errors
from conveyor.client import Client
from conveyor.models import JobState, NewJob
from tests.api.conftest import ApiServer


class FlakyTransport(httpx.HTTPTransport):
    """Real HTTP, but the first `failures` requests are dropped after being *sent*."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        with self.lock:
            if self.failures > 0:
                self.failures -= 1
                response.close()
                raise httpx.ReadError("connection reset after sending", request=request)
        return response


def test_submit_wait_result(api: ApiServer) -> None:
    with conveyor.Client(api.url) as client:
        job = client.submit("demo.count", {"to": 2, "delay": 0}, tags=["client"])
        assert job.state is JobState.QUEUED
        threading.Thread(target=api.run_worker, daemon=True).start()
        done = client.wait(job.id, timeout=60)
        assert done.state is JobState.SUCCEEDED
        assert done.result == {"total": 2, "sum": 3}
        states = [e.data["state"] for e in client.events(job.id) if e.type == "state"]
        assert states == ["queued", "running", "succeeded"]
        assert [j.id for j in client.list(tag="client")] == [job.id]


def test_errors_are_typed(api: ApiServer) -> None:
    with Client(api.url) as client:
        with pytest.raises(errors.JobNotFoundError):
            client.get("nope")
        with pytest.raises(errors.KindNotFoundError):
            client.submit("no.such.kind")
        with pytest.raises(errors.InvalidInputError) as info:
            client.submit("demo.sleep", {"seconds": -1})
        assert info.value.details["errors"][0]["loc"] == ["input", "seconds"]
        job = client.submit(NewJob(kind="noop", delay_s=3600))
        assert client.cancel(job.id).state is JobState.CANCELLED
        with pytest.raises(errors.InvalidStateError):
            client.cancel(job.id)
        assert client.retry(job.id).state is JobState.QUEUED
        client.cancel(job.id)
        client.delete(job.id)
        with pytest.raises(errors.JobNotFoundError):
            client.get(job.id)


def test_retried_submit_never_makes_two_jobs(api: ApiServer) -> None:
    transport = FlakyTransport(failures=2)
    with Client(api.url, transport=transport, backoff_s=0.01) as client:
        job = client.submit("noop", tags=["flaky"])
    assert transport.failures == 0
    with Client(api.url) as client:
        assert [j.id for j in client.list(tag="flaky")] == [job.id]


def test_connection_refused_is_retried_then_raised() -> None:
    with (
        Client("http://127.0.0.1:9", retries=2, backoff_s=0.01) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.get("x")


def test_files_round_trip(api: ApiServer, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("abc")
    with Client(api.url) as client:
        job = client.submit(
            "demo.count", {"to": 2, "delay": 0, "write_file": True}, files={"data.txt": source}
        )
        names = {(f["name"], f["direction"]) for f in client.files(job.id)}
        assert ("data.txt", "in") in names
        api.run_worker()
        assert client.wait(job.id, timeout=60).state is JobState.SUCCEEDED
        saved = client.download(job.id, "numbers.txt", tmp_path)
        assert saved.read_text().split() == ["1", "2"]
        later = client.submit("noop", delay_s=3600)
        assert client.upload(later.id, "x.bin", b"\x00\x01")["size"] == 2


def test_async_client(api: ApiServer) -> None:
    async def main() -> None:
        async with conveyor.AsyncClient(api.url) as client:
            jobs = await client.submit_many([NewJob(kind="noop", tags=["async"])] * 3)
            assert len(jobs) == 3
            assert len([j async for j in client.list(tag="async")]) == 3
            await asyncio.to_thread(api.run_worker)
            done = await client.wait(jobs[0].id, timeout=60)
            assert done.state is JobState.SUCCEEDED
            assert (await client.get(jobs[1].id)).state is JobState.SUCCEEDED
            assert "noop" in await client.kinds()
            assert await client.queues()
            with pytest.raises(errors.JobNotFoundError):
                await client.get("nope")

    asyncio.run(main())


def test_async_files_events_and_state_changes(api: ApiServer, tmp_path: Path) -> None:
    """The paths of the generated `Client` that `test_async_client` leaves out, run async."""
    source = tmp_path / "in.txt"
    source.write_text("abc")

    async def main() -> None:
        async with conveyor.AsyncClient(api.url) as client:
            job = await client.submit(
                "demo.count", {"to": 2, "delay": 0, "write_file": True}, files={"data.txt": source}
            )
            assert ("data.txt", "in") in {
                (f["name"], f["direction"]) for f in await client.files(job.id)
            }
            await asyncio.to_thread(api.run_worker)
            states = [e.data["state"] async for e in client.watch(job.id) if e.type == "state"]
            assert states == ["queued", "running", "succeeded"]
            assert [e.seq for e in await client.events(job.id)] == [
                e.seq async for e in client.watch(job.id)
            ]
            saved = await client.download(job.id, "numbers.txt", tmp_path)
            assert saved.read_text().split() == ["1", "2"]
            later = await client.submit("noop", delay_s=3600)
            assert (await client.upload(later.id, "x.bin", b"\x00\x01"))["size"] == 2
            with pytest.raises(TimeoutError):
                await client.wait(later.id, timeout=1)
            assert (await client.cancel(later.id)).state is JobState.CANCELLED
            assert (await client.retry(later.id)).state is JobState.QUEUED
            await client.cancel(later.id)
            await client.delete(later.id)
            with pytest.raises(errors.JobNotFoundError):
                await client.get(later.id)

    asyncio.run(main())


def test_wait_times_out_on_a_quiet_job(api: ApiServer) -> None:
    with Client(api.url) as client:
        job = client.submit("noop", delay_s=3600)
        with pytest.raises(TimeoutError):
            client.wait(job.id, timeout=1)


def test_list_takes_one_state_or_several(api: ApiServer) -> None:
    """`client.list(state="cancelled")` as a user writes it (it raised ValidationError)."""
    with Client(api.url) as client:
        job = client.submit(NewJob(kind="noop", delay_s=3600, tags=["one-state"]))
        client.cancel(job.id)
        for state in ("cancelled", JobState.CANCELLED, ["failed", "cancelled"]):
            assert [j.id for j in client.list(state=state, tag="one-state")] == [job.id]
        assert list(client.list(state="failed", tag="one-state")) == []
