"""The ledger checker (reliability-plan §2.3): what the handlers did vs what the store says."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from conveyor.models import JobState
from conveyor.store import Store


@dataclass
class Report:
    jobs: int
    lost: list[str] = field(default_factory=list)
    duplicate_completions: list[str] = field(default_factory=list)
    duplicate_executions: list[str] = field(default_factory=list)
    unexplained_duplicates: list[str] = field(default_factory=list)
    attempts: Counter[int] = field(default_factory=Counter)
    start_latency_ms: list[float] = field(default_factory=list)
    # Per re-run job: when the store made it claimable again (its first `queued`/`scheduled`
    # event after the first start) minus that start: an upper bound on fault -> rescue, since the
    # fault came after the start. Queueing behind a backlog is not counted.
    recovery_s: list[float] = field(default_factory=list)
    # Jobs the store made claimable again after they started (rescue, release or retry).
    requeued: list[str] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        values = sorted(self.start_latency_ms)
        return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


def check(store: Store, job_ids: list[str], ledger: Path) -> Report:
    starts: dict[str, list[dict[str, float]]] = defaultdict(list)
    for line in ledger.read_text().splitlines():
        record = json.loads(line)
        if record["ev"] == "start":
            starts[record["job"]].append(record)
    report = Report(jobs=len(job_ids))
    for job_id in job_ids:
        job = store.get(job_id)
        events = store.events(job_id)
        completions = sum(
            1 for e in events if e.type == "state" and e.data["state"] == JobState.SUCCEEDED
        )
        if job.state is not JobState.SUCCEEDED:
            report.lost.append(job_id)
        if completions > 1:
            report.duplicate_completions.append(job_id)
        runs = starts.get(job_id, [])
        report.attempts[job.attempt] += 1
        if len(runs) > 1:
            report.duplicate_executions.append(job_id)
            if sorted(r["attempt"] for r in runs)[1:] == [1] * (len(runs) - 1):
                report.unexplained_duplicates.append(job_id)  # re-run without a new attempt
        back = [e.at.timestamp() for e in events if e.type == "state"
                and e.data["state"] in (JobState.QUEUED, JobState.SCHEDULED)]  # fmt: skip
        if len(back) > 1:  # the first is the enqueue itself
            report.requeued.append(job_id)
        if len(runs) > 1:
            first = min(r["t"] for r in runs)
            again = [at for at in back if at > first]
            if again:
                report.recovery_s.append(min(again) - first)
        if runs:
            report.start_latency_ms.append((runs[0]["t"] - job.created_at.timestamp()) * 1000)
    return report
