"""When schedules fire: DST-correct cron in a time zone, intervals, bad expressions."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from conveyor.schedules.model import NewSchedule
from conveyor.schedules.timing import Timing


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def utc(tick: float) -> datetime:
    return datetime.fromtimestamp(tick, UTC)


ZURICH_0230 = Timing("30 2 * * *", "Europe/Zurich", None)


def test_spring_forward_day_fires_once_right_after_the_jump() -> None:
    # 2026-03-29: Zurich jumps from 02:00 CET to 03:00 CEST, so 02:30 does not exist that day.
    ticks = ZURICH_0230.after(ts(2026, 3, 28, 0), ts(2026, 3, 31, 0), 10)
    assert [utc(t) for t in ticks] == [
        datetime(2026, 3, 28, 1, 30, tzinfo=UTC),  # 02:30 CET
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # 03:00 CEST: once, right after the jump
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 CEST
    ]


def test_fall_back_day_fires_once_at_the_first_0230() -> None:
    # 2026-10-25: Zurich goes from 03:00 CEST back to 02:00 CET, so 02:30 happens twice.
    ticks = ZURICH_0230.after(ts(2026, 10, 24, 0), ts(2026, 10, 27, 0), 10)
    assert [utc(t) for t in ticks] == [
        datetime(2026, 10, 24, 0, 30, tzinfo=UTC),  # 02:30 CEST
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # the first 02:30 (CEST), not the second
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),  # 02:30 CET
    ]


def test_backward_walk_agrees_with_forward_across_both_transitions() -> None:
    start, end = ts(2026, 3, 1), ts(2026, 11, 30)
    forward = ZURICH_0230.after(start, end, 1000)
    backward = ZURICH_0230.before(end, start, 1000)
    assert backward[::-1] == forward
    assert len(forward) == 274  # one per day, March 2 to November 30: none lost, none doubled


def test_every_half_hour_runs_through_the_repeated_hour_by_elapsed_time() -> None:
    # An expression matching every 30 minutes keeps firing each real half hour on fall-back.
    timing = Timing("*/30 * * * *", "Europe/Zurich", None)
    ticks = timing.after(ts(2026, 10, 24, 23, 0), ts(2026, 10, 25, 2, 0), 20)
    assert [b - a for a, b in itertools.pairwise(ticks)] == [1800.0] * (len(ticks) - 1)
    assert len(ticks) == 6


def test_intervals_are_multiples_of_every_s_since_the_epoch() -> None:
    timing = Timing(None, "UTC", 60)
    assert timing.after(ts(2026, 1, 1, 0, 0) + 1, ts(2026, 1, 1, 0, 3), 10) == [
        ts(2026, 1, 1, 0, 1), ts(2026, 1, 1, 0, 2), ts(2026, 1, 1, 0, 3),
    ]  # fmt: skip
    assert timing.before(ts(2026, 1, 1, 0, 3), ts(2026, 1, 1, 0, 1), 10) == [
        ts(2026, 1, 1, 0, 3), ts(2026, 1, 1, 0, 2),
    ]  # fmt: skip
    assert timing.upcoming(ts(2026, 1, 1, 0, 0, 30), 2) == [
        ts(2026, 1, 1, 0, 1),
        ts(2026, 1, 1, 0, 2),
    ]


def test_six_fields_mean_seconds() -> None:
    timing = Timing("*/15 * * * * *", "UTC", None)
    assert timing.upcoming(ts(2026, 1, 1), 3) == [ts(2026, 1, 1) + s for s in (15, 30, 45)]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cron": "61 * * * *"}, "invalid cron expression"),
        ({"cron": "* * *"}, "invalid cron expression"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"cron": "0 3 * * *", "every_s": 60}, "exactly one of"),
        ({}, "exactly one of"),
        ({"every_s": 0}, "greater than or equal to 1"),
    ],
)
def test_bad_timings_are_refused_with_the_reason(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        NewSchedule(id="s", kind="noop", **fields)  # type: ignore[arg-type]
