"""The dashboard's pure parts: schema → form, form → input, charts, activity counting,
session signing."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from conveyor.clock import FakeClock
from conveyor.dashboard import charts, forms, session
from conveyor.dashboard.activity import Activity, seek
from conveyor.dashboard.jobs import Filters, _load, id_floor
from conveyor.errors import InvalidInputError
from conveyor.kinds.demo import CountIn, FailIn
from conveyor.kinds.registry import import_kinds
from conveyor.models import JobError, JobFilter, NewJob, QueueStats
from conveyor.service import Service
from conveyor.storage import open_storage
from conveyor.store import open_store
from conveyor.store.base import complete, fail
from tests.integration.harness import wait_for


def demo_service(tmp_path: Path, clock: FakeClock | None = None) -> Service:
    store = open_store("memory://", clock=clock)
    store.register_kinds(import_kinds(["conveyor.kinds.demo"]).infos())
    return Service(store, open_storage(f"file://{tmp_path / 'files'}"))


class Color(StrEnum):
    RED = "red"
    BLUE = "blue"


class Everything(BaseModel):
    name: str = Field(min_length=2, max_length=5, description="A name.")
    color: Color = Color.BLUE
    size: int | None = Field(None, ge=1)
    ratio: float = 0.5
    flags: list[str] = Field(default_factory=list)
    upload: str = Field(json_schema_extra={"format": "file"})
    on: bool = True


def test_fields_follow_the_schema() -> None:
    found = {f.name: f for f in forms.fields(Everything.model_json_schema())}
    assert found["name"].widget == "text"
    assert found["name"].required
    assert found["name"].attrs == {"minlength": 2, "maxlength": 5}
    assert found["color"].widget == "select"
    assert found["color"].options == ["red", "blue"]
    assert found["color"].default == "blue"
    assert found["size"].widget == "integer"
    assert found["size"].nullable
    assert found["size"].attrs == {"min": 1, "step": "1"}
    assert found["ratio"].widget == "number"
    assert found["flags"].widget == "json"
    assert found["upload"].widget == "file"
    assert found["on"].widget == "checkbox"


def test_read_converts_and_reports_per_field() -> None:
    fields = forms.fields(Everything.model_json_schema())
    data, problems = forms.read(
        fields, {"name": "ab", "color": "red", "size": "x", "ratio": "0.25", "flags": "[1,"},
        {"upload": "photo.png"},
    )  # fmt: skip
    assert data == {"name": "ab", "color": "red", "ratio": 0.25, "upload": "photo.png",
                    "on": False}  # fmt: skip
    assert problems == {"size": "enter a whole number",
                        "flags": "not valid JSON: Expecting value (line 1, column 4)"}  # fmt: skip
    _, missing = forms.read(fields, {}, {})
    assert missing == {"name": "this field is required", "upload": "choose a file"}


def test_schema_errors_land_on_their_fields(tmp_path: Path) -> None:
    service = demo_service(tmp_path)
    kind = service.kind("demo.count")
    assert [f.name for f in forms.fields(kind.input_schema)] == list(CountIn.model_fields)
    with pytest.raises(InvalidInputError) as caught:
        service.validate(kind, {"to": 0, "delay": -1})
    by_field, general = forms.schema_errors(caught.value.details["errors"])
    assert set(by_field) == {"to", "delay"}
    assert "minimum" in by_field["to"]
    assert general == []
    assert [f.name for f in forms.fields(FailIn.model_json_schema())][-1] == "succeed_on_attempt"


def test_charts_escape_labels_and_scale() -> None:
    svg = str(charts.bars([0, 5, 10], "<b>q</b>"))
    assert "<b>" not in svg
    assert "&lt;b&gt;q&lt;/b&gt;" in svg
    assert 'height="46.0"' in svg  # the largest bar fills the chart
    line = str(charts.line([None, 50, 100], "rate", top=100, unit="%"))
    assert "latest 100%" in line
    assert str(charts.line([None, None], "empty")).count("<polyline") == 0


def test_activity_counts_outcomes_per_queue(tmp_path: Path) -> None:
    service = demo_service(tmp_path)
    store = service.store
    jobs = service.submit_many([NewJob(kind="noop", queue=q) for q in ("a", "a", "b")])
    claimed = {j.id: j for j in store.claim(["a", "b"], "w", 3, 30)}
    ok = [complete(store, j.id, claimed[j.id].lease.token, {}) for j in jobs[:2]]  # type: ignore[union-attr]
    failed = fail(store, jobs[2].id, claimed[jobs[2].id].lease.token,  # type: ignore[union-attr]
                  JobError(type="E", message="m"), retry=False)  # fmt: skip
    assert all(ok) and failed
    activity = Activity(store, batch=2)
    activity.cursor = seek(store, time.time() - 3600, 100_000)
    assert activity.cursor == 0
    while activity.step():
        pass
    a, b = activity.series("a")[-1], activity.series("b")[-1]
    assert (a.counts["succeeded"], a.finished, a.failure_rate) == (2, 2, 0.0)
    assert (b.counts["failed"], b.failure_rate) == (1, 100.0)
    assert activity.series()[-1].finished == 3
    # Seeking to now skips everything already read; the backfill cap bounds it too.
    assert seek(store, time.time() + 1, 100_000) == activity.cursor
    assert seek(store, time.time() - 3600, 2) == activity.cursor - 2


def test_session_signing() -> None:
    secret = b"k" * 32
    issued = time.time()
    cookie = session.sign(secret, {"k": "id", "n": "nonce", "t": issued})
    assert session.unsign(secret, cookie) == {"k": "id", "n": "nonce", "t": issued}
    assert session.unsign(b"x" * 32, cookie) is None
    assert session.unsign(secret, cookie + "x") is None
    assert session.unsign(secret, "garbage") is None
    old = session.sign(secret, {"k": None, "n": "n", "t": issued - session.MAX_AGE_S - 1})
    assert session.unsign(secret, old) is None
    assert session.csrf_token(secret, "a") != session.csrf_token(secret, "b")


def test_paging_over_several_states_misses_nothing(tmp_path: Path) -> None:
    service = demo_service(tmp_path)
    store = service.store
    jobs = service.submit_many([NewJob(kind="noop", queue=f"q{i % 3}") for i in range(130)])
    for job in jobs[::2]:  # every other one is cancelled, the rest stay queued
        service.cancel(job.id)
    service.cancel(jobs[1].id)

    def walk(filters: Filters) -> list[str]:
        seen: list[str] = []
        while True:
            page, _ = _load(service, filters)
            seen.extend(j.id for j in page.jobs)
            if page.next_cursor is None:
                return seen
            filters.cursor = page.next_cursor

    assert walk(Filters(state=["queued", "cancelled"])) == sorted(
        (j.id for j in jobs), reverse=True
    )
    # A queue alone is read state by state too (the index is state, queue, id).
    assert walk(Filters(queue="q1")) == sorted((j.id for j in jobs if j.queue == "q1"),
                                               reverse=True)  # fmt: skip
    assert len(store.list_jobs(JobFilter(), None, 1000).jobs) == 130


def test_created_before_starts_the_scan_at_that_time(tmp_path: Path) -> None:
    clock = FakeClock()
    service = demo_service(tmp_path, clock)
    first = service.submit(NewJob(kind="noop"))
    clock.advance(1)
    cut = datetime.fromtimestamp(clock(), UTC)
    clock.advance(1)
    service.submit(NewJob(kind="noop"))
    assert id_floor(cut) > first.id
    page, _ = _load(service, Filters(until=cut.replace(tzinfo=None).isoformat()))
    assert [j.id for j in page.jobs] == [first.id]


def test_created_since_cuts_the_walk_instead_of_filtering_in_the_store(tmp_path: Path) -> None:
    clock = FakeClock()
    service = demo_service(tmp_path, clock)
    old = service.submit_many([NewJob(kind="noop") for _ in range(3)])
    clock.advance(60)
    since = datetime.fromtimestamp(clock(), UTC)
    new = []
    for _ in range(120):
        clock.advance(0.01)
        new.append(service.submit(NewJob(kind="noop")))
    seen: list[str] = []
    filters = Filters(since=since.replace(tzinfo=None).isoformat())
    while True:
        page, _ = _load(service, filters)
        seen.extend(j.id for j in page.jobs)
        if page.next_cursor is None:
            break
        filters.cursor = page.next_cursor
    assert seen == sorted((j.id for j in new), reverse=True)
    assert not {j.id for j in old} & set(seen)


def test_queue_stats_are_shared_and_refreshed_in_the_background(tmp_path: Path) -> None:
    service = demo_service(tmp_path)
    service.submit(NewJob(kind="noop"))
    calls: list[int] = []
    gate = threading.Event()
    real = service.store.queue_stats

    def slow_stats() -> list[QueueStats]:
        calls.append(1)
        if len(calls) > 1:
            assert gate.wait(10)
        return real()

    service.store.queue_stats = slow_stats  # type: ignore[method-assign]
    activity = Activity(service.store, stats_min_s=0)
    first = activity.queue_stats()
    assert [s.queued for s in first] == [1]
    service.submit(NewJob(kind="noop"))
    # Due again: the answer comes at once (the old one) while the store is asked behind it.
    assert activity.queue_stats() is first
    assert activity.queue_stats() is first
    gate.set()
    wait_for(lambda: activity.queue_stats() is not first, timeout=10)
    assert [s.queued for s in activity.queue_stats()] == [2]
    assert len(calls) >= 2
