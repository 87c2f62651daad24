"""Unique id prefixes for the CLI's job commands (`conveyor jobs show 01a24e91`).

Job ids are UUIDv7: their first 48 bits are the creation time in Unix milliseconds. So a hex
prefix bounds when its jobs were created, and only the jobs of that window are listed to find
the ones it matches, over the store or the API alike, with no store support for prefixes.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from conveyor import errors
from conveyor.models import JobFilter

if TYPE_CHECKING:
    from conveyor.cli.remote import Backend

MIN_PREFIX = 6  # hex digits: windows of ~4.7 hours at most
FULL_ID = 36
TIME_HEX = 12  # the 48-bit millisecond timestamp
SLACK_S = 5.0  # created_at is stamped within a few ms of the id: keep a margin
PAGE = 1000
MAX_PAGES = 50


def time_window(prefix: str) -> tuple[datetime, datetime] | None:
    """The creation times of the ids starting with `prefix`, or None when it says nothing."""
    digits = prefix.replace("-", "")[:TIME_HEX]
    if len(digits) < MIN_PREFIX or any(c not in string.hexdigits for c in digits):
        return None
    shift = 4 * (TIME_HEX - len(digits))
    low_ms, high_ms = int(digits, 16) << shift, (int(digits, 16) + 1) << shift
    return (
        datetime.fromtimestamp(low_ms / 1000 - SLACK_S, UTC),
        datetime.fromtimestamp(high_ms / 1000 + SLACK_S, UTC),
    )


def resolve(service: Backend, text: str) -> str:
    """The one job id `text` is or starts; a full id is returned as is (the command reports it
    if it does not exist). `JobNotFoundError` when nothing matches, `ConveyorError` when
    several jobs do."""
    prefix = text.strip().lower()
    if len(prefix) >= FULL_ID:
        return text
    window = time_window(prefix)
    if window is None:
        raise errors.JobNotFoundError(
            f"no job with id {text!r} (give a full id or at least {MIN_PREFIX} of its first"
            " hex digits)",
            job_id=text,
        )
    found: list[str] = []
    cursor: str | None = None
    flt = JobFilter(created_after=window[0], created_before=window[1])
    for _ in range(MAX_PAGES):
        page = service.list_jobs(flt, cursor, PAGE)
        found += [job.id for job in page.jobs if job.id.startswith(prefix)]
        if len(found) > 1:
            raise errors.ConveyorError(
                f"{text!r} is the start of several job ids ({', '.join(found[:3])}, ...);"
                " give more of the id"
            )
        cursor = page.next_cursor
        if not cursor:
            break
    else:
        raise errors.ConveyorError(f"{text!r} matches too many jobs to search; give more of it")
    if not found:
        raise errors.JobNotFoundError(f"no job with id starting {text!r}", job_id=text)
    return found[0]
