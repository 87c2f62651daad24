"""Schedules declared in code: on a kind (`@conveyor.task(..., schedules=[Every(60)])`) or on
their own (`conveyor.schedule("nightly", kind="report", cron="0 3 * * *")`).

Workers (`conveyor worker`, `conveyor up`) register them in the store when they start, like
kinds; from then on they run whether or not a process that declared them is alive.
"""

from __future__ import annotations

from typing import Any

from conveyor.schedules.model import NewSchedule

#: The kind name used to check a declaration before it is bound to its kind.
_PENDING_KIND = "pending"


class Declared:
    """A schedule declared on a kind, bound to the kind when the kind is declared."""

    def __init__(self, id: str | None, **fields: Any) -> None:
        self.id = id
        self.fields = fields
        # Check now, so a bad expression fails at import with its line in the traceback.
        NewSchedule(id=id or _PENDING_KIND, kind=_PENDING_KIND, **fields)

    def bind(self, kind: str) -> NewSchedule:
        """The schedule for `kind`; its id defaults to the kind's name."""
        return NewSchedule(id=self.id or kind, kind=kind, **self.fields)


class Cron(Declared):
    """Run the kind at the times of a cron expression in a time zone (DST-correct).

    `Cron("30 2 * * *", "Europe/Zurich")` runs daily at 02:30 Zurich time. Other keywords are
    the fields of a schedule: `id`, `input`, `misfire`, `catch_up_max`, `misfire_grace_s`,
    `overlap`, `queue`, `priority`, `tags`, `paused`, `description`.
    """

    def __init__(
        self, expr: str, timezone: str = "UTC", *, id: str | None = None, **fields: Any
    ) -> None:
        super().__init__(id, cron=expr, timezone=timezone, **fields)


class Every(Declared):
    """Run the kind every `seconds` seconds (on multiples of it since the Unix epoch, so
    `Every(60)` runs on whole minutes). Keywords as for `Cron`."""

    def __init__(self, seconds: int, *, id: str | None = None, **fields: Any) -> None:
        super().__init__(id, every_s=seconds, **fields)
