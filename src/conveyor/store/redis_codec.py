"""How the Redis store writes jobs: hashes to `Job`s, events, and script arguments.

Field values are strings; a cleared field is "" (one HSET per settle instead of HSET + HDEL).
Numbers keep full precision: floats go as `repr`, times are epoch seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from conveyor.models import (
    Job,
    JobError,
    JobEvent,
    JobFilter,
    JobState,
    Lease,
    Progress,
    from_ts,
    trusted,
)
from conveyor.store import rules
from conveyor.store.base import Settlement, job_from_values
from conveyor.store.rules import Outcome


def dumps(value: Any) -> str:
    """Compact JSON text."""
    return orjson.dumps(value).decode()


loads = orjson.loads


def ts(value: str) -> datetime:
    """A time the scripts wrote (epoch seconds)."""
    return datetime.fromtimestamp(float(value), UTC)


def _opt_float(value: str | None) -> float | None:
    return None if value is None else float(value)


class Claim(NamedTuple):
    """What a claim wrote into each job it took (claim.lua), times parsed once per claim."""

    owner: str
    at: datetime
    expires_at: datetime


_STATES = {state.value: state for state in JobState}  # faster than JobState(value)


def hash_to_job(h: dict[str, str], claim: Claim | None = None, token: str = "") -> Job:
    """Build a Job from its hash (no validation: the store wrote it); with `claim`, from the
    hash as it was before that claim took it with lease `token`."""
    # Cleared fields are "" rather than deleted (one HSET per settle instead of HSET + HDEL).
    lease = None
    if claim is not None:
        state, attempt = JobState.RUNNING, int(h["attempt"]) + 1
        lease = trusted(Lease, {"owner": claim.owner, "token": token,
                                "expires_at": claim.expires_at})  # fmt: skip
        started_at: datetime | None = claim.at
        updated_at = claim.at
    else:
        state, attempt = _STATES[h["state"]], int(h["attempt"])
        if state is JobState.RUNNING and h.get("lease_token"):
            lease = trusted(Lease, {
                "owner": h["lease_owner"], "token": h["lease_token"],
                "expires_at": ts(h["lease_expires_at"]),
            })  # fmt: skip
        started_at = from_ts(_opt_float(h.get("started_at")))
        updated_at = ts(h["updated_at"])
    progress = h.get("progress") or None
    error = h.get("error") or None
    result = h.get("result") or None
    webhook = h.get("webhook")
    return job_from_values(
        id=h["id"],
        kind=h["kind"],
        queue=h["queue"],
        state=state,
        input=loads(h["input"]),
        priority=int(h["priority"]),
        run_at=ts(h["run_at"]),
        attempt=attempt,
        max_attempts=int(h["max_attempts"]),
        timeout_s=_opt_float(h.get("timeout_s")),
        backoff_s=float(h["backoff_s"]),
        # every field is present: the store wrote them with model_dump_json
        progress=None if progress is None else trusted(Progress, loads(progress)),
        result=None if result is None else loads(result),
        error=None if error is None else trusted(JobError, loads(error)),
        tags=loads(h["tags"]),
        idempotency_key=h.get("idempotency_key"),
        webhook=None if webhook is None else loads(webhook),
        lease=lease,
        cancel_requested=h.get("cancel_requested") == "1",
        created_at=ts(h["created_at"]),
        started_at=started_at,
        finished_at=from_ts(_opt_float(h.get("finished_at") or None)),
        updated_at=updated_at,
        concurrency_key=h.get("concurrency_key"),
        unique_key=h.get("unique_key"),
        schedule_id=h.get("schedule_id"),
        schedule_tick=from_ts(_opt_float(h.get("schedule_tick"))),
        waiting_reason=None,
        # workflow fields: absent on most jobs (and on every job written before workflows)
        depends_on=loads(h["depends_on"]) if h.get("depends_on") else [],
        workflow_id=h.get("workflow_id") or None,
        step=h.get("step") or None,
        parent_id=h.get("parent_id") or None,
        continuation=loads(h["continuation"]) if h.get("continuation") else None,
    )


def pairs(flat: Sequence[str]) -> dict[str, str]:
    """An HGETALL-style flat [field, value, ...] list as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def event_model(text: str) -> JobEvent:
    """A JobEvent from the JSON the scripts wrote (common.lua `finish`)."""
    raw = loads(text)
    raw["at"] = datetime.fromtimestamp(raw["at"], UTC)
    return trusted(JobEvent, raw)


def is_success(s: Settlement) -> bool:
    """Successes need no read before settling (see RedisStore._settle_chunk)."""
    return s.outcome is Outcome.SUCCEEDED


def success_args(s: Settlement) -> list[Any]:
    """settle.lua's fields for a success: any cancel flag, attempt and event data from the job."""
    return [s.job_id, s.token, "*", JobState.SUCCEEDED.value, "", "", "=" + dumps(s.result),
            "", "1", "0", ""]  # fmt: skip


def settle_args(s: Settlement, row: dict[str, str], now: float) -> list[Any]:
    """settle.lua's fields for a settlement, decided by `rules.decide` from the job as read."""
    decision = rules.decide(
        outcome=s.outcome, attempt=int(row["attempt"]), max_attempts=int(row["max_attempts"]),
        backoff_s=float(row["backoff_s"]), cancel_requested=row["cancel_requested"] == "1",
        now=now, error=s.error, retry=s.retry,
    )  # fmt: skip
    result = "=" + dumps(s.result) if decision.state is JobState.SUCCEEDED else ""
    return [
        s.job_id, s.token, row["cancel_requested"], decision.state.value,
        "" if decision.run_at is None else repr(float(decision.run_at)), decision.attempt,
        result, "" if decision.error is None else decision.error.model_dump_json(),
        "1" if decision.finished else "0", "1" if decision.state is JobState.QUEUED else "0",
        dumps(decision.event_data()),
    ]  # fmt: skip


def matches(job: Job, f: JobFilter) -> bool:
    """Whether a job passes a list filter."""
    checks = (
        not f.state or job.state in f.state,
        f.kind is None or job.kind == f.kind,
        f.queue is None or job.queue == f.queue,
        f.tag is None or f.tag in job.tags,
        f.created_after is None or job.created_at >= f.created_after,
        f.created_before is None or job.created_at < f.created_before,
        f.workflow_id is None or job.workflow_id == f.workflow_id,
        f.parent_id is None or job.parent_id == f.parent_id,
    )
    return all(checks)
