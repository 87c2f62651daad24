"""The jobs table: filters, search by id, cursor paging, live rows, bulk cancel/retry."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from conveyor import errors
from conveyor.dashboard import render
from conveyor.dashboard.web import DashboardRoute, ServiceDep, ViewerDep, posted, see_other
from conveyor.models import JobFilter, JobPage, JobState
from conveyor.service import Service

router = APIRouter(route_class=DashboardRoute)

PAGE_SIZE = 50
MAX_BULK = 500


@dataclass
class Filters:
    """The jobs table's query string, parsed (and written back for links)."""

    state: list[str] = field(default_factory=list)
    kind: str = ""
    queue: str = ""
    tag: str = ""
    since: str = ""
    until: str = ""
    id: str = ""
    cursor: str = ""

    def job_filter(self) -> JobFilter:
        return JobFilter(
            state=[JobState(s) for s in self.state] or None,
            kind=self.kind or None,
            queue=self.queue or None,
            tag=self.tag or None,
            created_after=_when(self.since),
            created_before=_when(self.until),
            ids=[self.id] if self.id else None,
        )

    def query(self, **override: str) -> str:
        """The query string of these filters (for paging and polling links)."""
        pairs = [("state", s) for s in self.state]
        for name in ("kind", "queue", "tag", "since", "until", "id", "cursor"):
            value = override.get(name, getattr(self, name))
            if value:
                pairs.append((name, value))
        return urlencode(pairs)


def _when(text: str) -> datetime | None:
    """A `datetime-local` value (taken as UTC) or an ISO time."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise errors.InvalidInputError(
            f"cannot read the time {text!r}; use 2026-01-31T12:00"
        ) from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse(
    state: list[str],
    kind: str,
    queue: str,
    tag: str,
    since: str,
    until: str,
    id: str,
    cursor: str,
) -> Filters:
    known = {s.value for s in JobState}
    bad = [s for s in state if s not in known]
    if bad:
        raise errors.InvalidInputError(f"unknown state {bad[0]!r}; use one of {', '.join(known)}")
    return Filters(
        state=state,
        kind=kind.strip(),
        queue=queue.strip(),
        tag=tag.strip(),
        since=since,
        until=until,
        id=id.strip(),
        cursor=cursor,
    )


StateQ = Annotated[list[str], Query()]


def id_floor(when: datetime) -> str:
    """The smallest job id created at or after `when` (ids are UUIDv7: time first)."""
    ms = int(when.timestamp() * 1000)
    return str(uuid.UUID(int=(ms << 80) | (0x7 << 76) | (0b10 << 62)))


def _load(service: Service, filters: Filters) -> tuple[JobPage, list[str]]:
    """One page, newest first, keeping every store query on an index. Ids are time-ordered,
    so "created before" starts the keyset walk there, and "created since" is not sent to
    the store at all (it would walk to the oldest job looking for matches): the page is cut
    where the walk passes that time. Several states (or a queue, which is indexed after the
    state) are read with one indexed query per state and merged. The next cursor is the last
    id shown."""
    wanted = filters.job_filter()
    cursor = filters.cursor or None
    if wanted.created_before is not None:
        bound = id_floor(wanted.created_before)
        cursor = bound if cursor is None or bound < cursor else cursor
    since = wanted.created_after
    wanted.created_after = None
    states = wanted.state or ([*JobState] if wanted.queue else [])
    if len(states) < 2:
        page = service.list_jobs(wanted, cursor, PAGE_SIZE)
    else:
        pages = [
            service.list_jobs(wanted.model_copy(update={"state": [s]}), cursor, PAGE_SIZE)
            for s in states
        ]
        merged = sorted((j for p in pages for j in p.jobs), key=lambda j: j.id, reverse=True)
        more = len(merged) > PAGE_SIZE or any(p.next_cursor for p in pages)
        shown = merged[:PAGE_SIZE]
        page = JobPage(jobs=shown, next_cursor=shown[-1].id if more and shown else None)
    if since is not None:
        floor = id_floor(since)
        kept = [j for j in page.jobs if j.id >= floor and j.created_at >= since]
        passed = len(kept) < len(page.jobs)  # the walk went past `since`: nothing older
        page = JobPage(jobs=kept, next_cursor=None if passed else page.next_cursor)
    return page, sorted(service.kinds())


@router.get("/jobs", include_in_schema=False)
async def jobs_page(
    request: Request,
    viewer: ViewerDep,
    service: ServiceDep,
    state: StateQ = [],  # noqa: B006
    kind: str = "",
    queue: str = "",
    tag: str = "",
    since: str = "",
    until: str = "",
    id: str = "",
    cursor: str = "",
    done: str = "",
) -> Response:
    """The table; with `HX-Request` (the live poll) only its rows."""
    filters = parse(state, kind, queue, tag, since, until, id, cursor)
    if filters.id and not filters.cursor:
        try:  # an exact id goes straight to its page
            await run_in_threadpool(service.get, filters.id)
            return see_other(f"/ui/jobs/{filters.id}")
        except errors.JobNotFoundError:
            pass
    page, kinds = await run_in_threadpool(_load, service, filters)
    template = "_rows.html" if request.headers.get("hx-request") else "jobs.html"
    return render.page(
        request,
        template,
        page=page,
        filters=filters,
        kinds=kinds,
        states=[s.value for s in JobState],
        notice=_notice(done),
    )


def _notice(done: str) -> str | None:
    """The result line of a bulk action, rebuilt from counts only (never echoed text)."""
    action, _, counts = done.partition(":")
    ok, _, skipped = counts.partition(":")
    if action not in ("cancel", "retry") or not ok.isdigit():
        return None
    verb = "Cancelled" if action == "cancel" else "Retried"
    extra = f"; {int(skipped)} could not be" if skipped.isdigit() and int(skipped) else ""
    return f"{verb} {int(ok)} job{'s' if int(ok) != 1 else ''}{extra}."


def bulk_apply(service: Service, action: str, ids: list[str]) -> tuple[int, int]:
    """(applied, skipped): a job in the wrong state for the action is skipped, not an error."""
    apply = service.cancel if action == "cancel" else service.retry
    ok = skipped = 0
    for job_id in ids:
        try:
            apply(job_id)
            ok += 1
        except (errors.InvalidStateError, errors.JobNotFoundError):
            skipped += 1
    return ok, skipped


RETRYABLE = (JobState.FAILED, JobState.CANCELLED)
#: Retry-all-matching stops after this many jobs (run it again for more).
MAX_MATCHING = 10_000


def matching_retryable(service: Service, filters: Filters) -> list[str]:
    """Ids of the failed or cancelled jobs the filter matches (all pages, not one), oldest
    last; the filter's own states narrow it further."""
    wanted = filters.job_filter()
    states = [s for s in RETRYABLE if not wanted.state or s in wanted.state]
    found: list[str] = []
    for state in states:
        cursor: str | None = None
        while len(found) < MAX_MATCHING:
            page = service.list_jobs(wanted.model_copy(update={"state": [state]}), cursor, 1000)
            found += [job.id for job in page.jobs]
            cursor = page.next_cursor
            if not cursor:
                break
    return found[:MAX_MATCHING]


def _filters_of(query: str) -> Filters:
    values = parse_qs(query)

    def one(name: str) -> str:
        return values.get(name, [""])[0]

    return parse(values.get("state", []), one("kind"), one("queue"), one("tag"), one("since"),
                 one("until"), one("id"), "")  # fmt: skip


@router.post("/jobs/bulk", include_in_schema=False)
async def bulk(request: Request, viewer: ViewerDep, service: ServiceDep) -> Response:
    form = await posted(request, viewer, "submit")
    action = str(form.get("action", ""))
    if action not in ("cancel", "retry", "retry-matching"):
        raise errors.InvalidInputError("choose cancel or retry")
    if action == "retry-matching":  # every failed/cancelled job of the filter, every page
        filters = _filters_of(str(form.get("back", "")))
        ids = await run_in_threadpool(matching_retryable, service, filters)
        action = "retry"
    else:
        ids = [str(v) for v in form.getlist("ids")][:MAX_BULK]
    ok, skipped = await run_in_threadpool(bulk_apply, service, action, ids)
    back = str(form.get("back", ""))
    query = back if back and "done=" not in back else ""
    return see_other(f"/ui/jobs?{query}{'&' if query else ''}done={action}:{ok}:{skipped}")
