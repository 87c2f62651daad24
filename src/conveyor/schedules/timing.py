"""When a schedule fires: cron expressions in a time zone, or a fixed interval.

Ticks are instants (epoch seconds). Every process computes the same ticks for a schedule, so
the tick itself names the job it makes (`schedule:<id>:<tick>`), and any number of tickers
agree on it. Cron expressions are evaluated with cronsim in the schedule's time zone, which
makes them DST-correct the way Debian's cron is: a time skipped by the spring-forward jump
fires once, right after the jump (02:30 on a day without 02:30 fires at 03:00), and a time
that happens twice in the autumn fires once, the first time. Intervals are multiples of
`every_s` counted from the Unix epoch, so `every_s=60` fires on whole minutes (UTC).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

#: A tick later than this is never looked for (a cron that matches nothing near, e.g. Feb 30).
HORIZON_S = 5 * 366 * 86400.0
_EPSILON = timedelta(microseconds=1)


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`; `ValueError` if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name such as Europe/Zurich"
        ) from exc


def check_cron(expr: str) -> str:
    """The expression, normalized; `ValueError` with cronsim's reason if it is not valid.

    Five fields (minute hour day month weekday), or six with seconds first; `@daily` and its
    friends; `L` and `#` as cronsim supports them.
    """
    text = " ".join(expr.split())
    try:
        CronSim(text, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise ValueError(f"invalid cron expression {expr!r}: {exc}") from None
    return text


def explain(expr: str) -> str:
    """The expression in words (`At 02:30 every day`); the expression itself if cronsim
    cannot say it."""
    try:
        return CronSim(expr, datetime(2000, 1, 1, tzinfo=UTC)).explain()
    except Exception:  # explain() is best-effort: never fail a read over it
        return expr


class Timing:
    """The ticks of one schedule: `cron` in `timezone`, or every `every_s` seconds."""

    def __init__(self, cron: str | None, timezone: str, every_s: float | None) -> None:
        if (cron is None) == (every_s is None):
            raise ValueError("give exactly one of cron and every_s")
        self.cron = cron
        self.tz = zone(timezone)
        self.every_s = every_s

    def after(self, start: float, until: float, limit: int) -> list[float]:
        """Up to `limit` ticks in (start, until], oldest first."""
        found: list[float] = []
        for tick in self._forward(start):
            if tick > until or len(found) >= limit:
                break
            found.append(tick)
        return found

    def before(self, end: float, floor: float, limit: int) -> list[float]:
        """Up to `limit` ticks in (floor, end], newest first."""
        found: list[float] = []
        for tick in self._backward(end):
            if tick <= floor or len(found) >= limit:
                break
            found.append(tick)
        return found

    def upcoming(self, now: float, n: int) -> list[float]:
        """The next `n` ticks after `now` (fewer if the expression matches nothing soon)."""
        return self.after(now, now + HORIZON_S, n)

    def _forward(self, start: float) -> Iterator[float]:
        if self.every_s is not None:
            step = self.every_s
            k = math.floor(start / step) + 1
            while True:
                yield k * step
                k += 1
        assert self.cron is not None
        for moment in CronSim(self.cron, datetime.fromtimestamp(start, self.tz)):
            yield moment.timestamp()

    def _backward(self, end: float) -> Iterator[float]:
        if self.every_s is not None:
            step = self.every_s
            k = math.floor(end / step)
            while True:
                yield k * step
                k -= 1
        assert self.cron is not None
        # cronsim's reverse walk starts strictly before its datetime, unless that datetime has
        # microseconds: then its own second counts too. So `end` itself is included.
        start = datetime.fromtimestamp(end, self.tz) + _EPSILON
        for moment in CronSim(self.cron, start, reverse=True):
            yield moment.timestamp()
