from __future__ import annotations

from conveyor.models import Job, JobState
from conveyor.store.base import JobSpec, new_job


def test_trusted_jobs_equal_validated_ones() -> None:
    spec = JobSpec(id="01a2175a-250b-7149-80ca-6fd5ab7a7457", kind="k", queue="q",
                   input={"a": 1}, run_at=1_800_000_000.0, tags=("x",))  # fmt: skip
    fast = new_job(spec, JobState.QUEUED, 1_800_000_000.0)
    checked = Job.model_validate(fast.model_dump())
    assert fast == checked
    assert fast.model_dump_json() == checked.model_dump_json()
    assert set(fast.model_dump()) == set(Job.model_fields)
