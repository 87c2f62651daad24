"""The ticker on every store: one job per tick however many tickers run, misfire and overlap
policies, pause/resume, and a schedule whose kind is unknown."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conveyor import errors
from conveyor.clock import FakeClock
from conveyor.models import JobFilter, JobState, KindInfo
from conveyor.schedules.model import STATES, NewSchedule
from conveyor.schedules.service import Schedules
from conveyor.schedules.ticker import PassReport, Ticker, schedule_tag, tick_key
from conveyor.service import Service
from conveyor.storage import open_storage
from conveyor.store import Store

START = 1_800_000_000.0  # the FakeClock's start: a whole minute


@pytest.fixture
def service(store: Store, tmp_path: Path) -> Service:
    store.register_kinds([KindInfo(name="noop"), KindInfo(name="other")])
    return Service(store, open_storage(f"file://{tmp_path / 'files'}"))


@pytest.fixture
def schedules(service: Service) -> Schedules:
    return Schedules(service)


def jobs_of(store: Store, schedule_id: str) -> list[Any]:
    page = store.list_jobs(JobFilter(tag=schedule_tag(schedule_id)), None, 1000)
    return sorted(page.jobs, key=lambda j: j.idempotency_key or "")


def keys_of(store: Store, schedule_id: str) -> list[str]:
    return sorted(j.idempotency_key for j in jobs_of(store, schedule_id))


def test_three_tickers_make_exactly_one_job_per_tick(
    store: Store, service: Service, schedules: Schedules, clock: FakeClock
) -> None:
    schedules.create(NewSchedule(id="beat", kind="noop", every_s=1, input={"x": 1}))
    tickers = [Ticker(service) for _ in range(3)]
    created = 0
    for second in range(1, 21):
        clock.advance(1)
        order = tickers if second % 2 else tickers[::-1]
        for ticker in order:
            created += sum(len(ids) for ids in ticker.run_once().created.values())
    assert created == 20
    assert keys_of(store, "beat") == sorted(tick_key("beat", START + s) for s in range(1, 21))
    job = jobs_of(store, "beat")[0]
    assert job.kind == "noop" and job.input == {"x": 1} and job.state is JobState.QUEUED
    assert job.schedule_id == "beat"  # links back to its schedule and tick
    assert job.schedule_tick == datetime.fromtimestamp(START + 1, UTC)
    state = schedules.get("beat").state
    assert state.last_tick == datetime.fromtimestamp(START + 20, UTC)
    assert state.last_job_id is not None


def test_a_ticker_that_lost_the_state_makes_no_second_job(
    store: Store, service: Service, schedules: Schedules, clock: FakeClock
) -> None:
    schedules.create(NewSchedule(id="lost", kind="noop", every_s=1))
    clock.advance(5)
    assert len(Ticker(service).run_once().created["lost"]) == 5
    store.put_record(STATES, "lost", {"last_tick": START})  # a racing ticker wrote late
    again = Ticker(service).run_once()
    assert again.created == {} and again.existing == {"lost": 5}
    assert len(keys_of(store, "lost")) == 5


def test_the_idempotency_window_covers_a_catch_up(
    store: Store, tmp_path: Path, schedules: Schedules, clock: FakeClock
) -> None:
    # Keys kept only 5 s by default; catch-up ticks are 20-30 s old when made, and must not be
    # made twice by a ticker that plans them again after those 5 s.
    short = Service(store, open_storage(f"file://{tmp_path / 'short'}"), idempotency_window_s=5)
    schedules.create(
        NewSchedule(id="w", kind="noop", every_s=10, misfire="catch_up", catch_up_max=3,
                    misfire_grace_s=5)
    )  # fmt: skip
    clock.advance(60)
    Ticker(short).run_once()
    assert keys_of(store, "w") == sorted(tick_key("w", START + t) for t in (30, 40, 50, 60))
    clock.advance(10)
    store.put_record(STATES, "w", {"last_tick": START})
    Ticker(short).run_once()  # plans 40, 50, 60 as missed again, and 70
    assert keys_of(store, "w") == sorted(tick_key("w", START + t) for t in (30, 40, 50, 60, 70))


def test_a_failing_pass_is_retried_and_the_loop_goes_on(
    store: Store, service: Service, schedules: Schedules, clock: FakeClock
) -> None:
    schedules.create(NewSchedule(id="flaky", kind="noop", every_s=1))
    clock.advance(1)
    ticker = Ticker(service)
    real = ticker.run_once
    calls = []

    def flaky() -> PassReport:
        calls.append(1)
        if len(calls) == 1:
            raise errors.StoreUnavailableError("down for a moment")
        report = real()
        if report.created:
            stop.set()
        return report

    ticker.run_once = flaky  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=ticker.run, args=(stop,), daemon=True)
    thread.start()
    assert stop.wait(10), "the ticker did not recover from a failed pass"
    thread.join(5)
    assert len(calls) >= 2 and keys_of(store, "flaky") == [tick_key("flaky", START + 1)]


def test_a_tick_seen_late_within_the_grace_still_runs(
    store: Store, service: Service, schedules: Schedules, clock: FakeClock
) -> None:
    schedules.create(NewSchedule(id="s", kind="noop", every_s=10, misfire="skip"))
    clock.advance(35)  # ticks at +10, +20, +30; the grace is 30 s, so +10 is 25 s late: fine
    Ticker(service).run_once()
    assert keys_of(store, "s") == sorted(tick_key("s", START + t) for t in (10, 20, 30))


@pytest.mark.parametrize(
    ("misfire", "expected"),
    [
        ("skip", []),  # nothing for the 100 missed ticks
        ("run_once", [960]),  # one job, for the latest missed tick
        ("catch_up", [930, 940, 950, 960]),  # the latest catch_up_max missed ticks
    ],
)
def test_misfire_policy_after_downtime(
    store: Store,
    service: Service,
    schedules: Schedules,
    clock: FakeClock,
    misfire: str,
    expected: list[int],
) -> None:
    schedules.create(
        NewSchedule(id="m", kind="noop", every_s=10, misfire=misfire,  # type: ignore[arg-type]
                    catch_up_max=4, misfire_grace_s=5)
    )  # fmt: skip
    clock.advance(966)  # nobody ticked for 96 ticks; 960 is 6 s late: a misfire too
    report = Ticker(service).run_once()
    assert keys_of(store, "m") == sorted(tick_key("m", START + t) for t in expected)
    assert report.skipped.get("m", 0) == 96 - len(expected)
    clock.advance(4)  # the next tick (970) is on time, whatever the policy
    Ticker(service).run_once()
    assert tick_key("m", START + 970) in keys_of(store, "m")
    assert len(keys_of(store, "m")) == len(expected) + 1


def test_run_once_does_not_add_a_late_job_when_a_tick_is_on_time(
    store: Store, service: Service, schedules: Schedules, clock: FakeClock
) -> None:
    schedules.create(NewSchedule(id="r", kind="noop", every_s=10, misfire_grace_s=15))
    clock.advance(100)  # 10..80 missed (older than 15 s), 90 and 100 on time
    Ticker(service).run_once()
    assert keys_of(store, "r") == sorted(tick_key("r", START + t) for t in (90, 100))


def test_overlap_allow_forbid_replace(
    store: Store, service: Service, schedules: Schedules, clock: FakeClock
) -> None:
    for policy in ("allow", "forbid", "replace"):
        schedules.create(NewSchedule(id=policy, kind="noop", every_s=10, overlap=policy))  # type: ignore[arg-type]
    ticker = Ticker(service)
    clock.advance(10)
    ticker.run_once()
    first = {p: jobs_of(store, p)[0] for p in ("allow", "forbid", "replace")}
    claimed = store.claim(["default"], "w1", 10, 60)  # every first run is running now
    assert {j.id for j in claimed} == {j.id for j in first.values()}
    clock.advance(10)
    report = ticker.run_once()
    assert len(jobs_of(store, "allow")) == 2  # allow: a second run beside the first
    assert len(jobs_of(store, "forbid")) == 1 and report.skipped == {"forbid": 1}
    replaced = jobs_of(store, "replace")
    assert len(replaced) == 2
    assert store.get(first["replace"].id).cancel_requested  # replace: the first is cancelled
    assert not store.get(first["allow"].id).cancel_requested
    assert schedules.get("forbid").state.skipped == 1


def test_overlap_forbid_runs_again_once_the_previous_run_finished(
    store: Store, service: Service, schedules: Schedules, clock: FakeClock
) -> None:
    schedules.create(NewSchedule(id="f", kind="noop", every_s=10, overlap="forbid"))
    ticker = Ticker(service)
    clock.advance(10)
    ticker.run_once()
    (first,) = jobs_of(store, "f")
    store.cancel(first.id)  # the previous run ended (cancelled is final)
    clock.advance(10)
    ticker.run_once()
    assert len(jobs_of(store, "f")) == 2


def test_overlap_forbid_after_downtime_makes_one_job_not_a_burst(
    store: Store, service: Service, schedules: Schedules, clock: FakeClock
) -> None:
    schedules.create(
        NewSchedule(id="b", kind="noop", every_s=1, overlap="forbid", misfire="catch_up")
    )
    clock.advance(20)  # 20 ticks due at once (within the grace)
    Ticker(service).run_once()
    assert keys_of(store, "b") == [tick_key("b", START + 20)]


def test_paused_schedule_makes_no_jobs_and_resumes_without_catching_up(
    store: Store, service: Service, schedules: Schedules, clock: FakeClock
) -> None:
    schedules.create(NewSchedule(id="p", kind="noop", every_s=10, misfire="catch_up"))
    ticker = Ticker(service)
    assert schedules.pause("p").paused
    assert schedules.get("p").next_runs == []
    clock.advance(100)
    ticker.run_once()
    assert jobs_of(store, "p") == []
    assert not schedules.pause("p", False).paused
    clock.advance(10)
    ticker.run_once()
    assert keys_of(store, "p") == [tick_key("p", START + 110)]


def test_unknown_kind_is_reported_on_the_schedule_and_ticks_go_on(
    store: Store, service: Service, schedules: Schedules, clock: FakeClock
) -> None:
    schedules.register([NewSchedule(id="k", kind="not.registered", every_s=10)])
    ticker = Ticker(service)
    clock.advance(10)
    ticker.run_once()
    state = schedules.get("k").state
    assert state.last_error is not None and "not.registered" in state.last_error
    store.register_kinds([KindInfo(name="not.registered")])
    service.kinds(refresh=True)
    clock.advance(10)
    ticker.run_once()
    assert keys_of(store, "k") == [tick_key("k", START + 20)]
    assert schedules.get("k").state.last_error is None


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        # Spring forward (2026-03-29): 02:30 does not exist; it runs at 03:00 CEST (01:00 UTC),
        # then at 02:30 CEST (00:30 UTC) the next day.
        (datetime(2026, 3, 28, 12, tzinfo=UTC), [(29, 1, 0), (30, 0, 30)]),
        # Fall back (2026-10-25): 02:30 happens twice; it runs once, at the first (00:30 UTC),
        # then at 02:30 CET (01:30 UTC) the next day.
        (datetime(2026, 10, 24, 12, tzinfo=UTC), [(25, 0, 30), (26, 1, 30)]),
    ],
)
def test_dst_daily_0230_zurich_through_the_ticker(
    store: Store,
    service: Service,
    schedules: Schedules,
    clock: FakeClock,
    start: datetime,
    expected: list[tuple[int, int, int]],
) -> None:
    # Tick every 10 minutes for two days, as a ticker that is always up would.
    clock.advance(start.timestamp() - clock())
    schedules.create(NewSchedule(id="z", kind="noop", cron="30 2 * * *", timezone="Europe/Zurich"))
    ticker = Ticker(service)
    for _ in range(2 * 24 * 6):
        clock.advance(600)
        ticker.run_once()
    ticks = sorted(j.schedule_tick for j in jobs_of(store, "z"))
    assert [(t.day, t.hour, t.minute) for t in ticks] == expected


def test_code_declared_schedules_keep_an_admins_pause(
    schedules: Schedules, clock: FakeClock
) -> None:
    declared = NewSchedule(id="c", kind="noop", every_s=60)
    schedules.register([declared])
    assert schedules.get("c").source == "code"
    schedules.pause("c")
    schedules.register([declared.model_copy(update={"every_s": 120})])  # a worker restarts
    view = schedules.get("c")
    assert view.paused and view.every_s == 120


def test_one_broken_schedule_does_not_hold_up_the_others(
    store: Store, service: Service, schedules: Schedules, clock: FakeClock
) -> None:
    for name in ("broken", "fine"):
        schedules.create(NewSchedule(id=name, kind="noop", every_s=1))
    ticker = Ticker(service)
    real = ticker._fire

    def fire(schedule: Any, tick: float, now: float) -> Any:
        if schedule.id == "broken":
            raise RuntimeError("a bug in one schedule")
        return real(schedule, tick, now)

    ticker._fire = fire  # type: ignore[method-assign]
    clock.advance(1)
    report = ticker.run_once()
    assert list(report.created) == ["fine"]
    assert jobs_of(store, "broken") == []
