"""conveyor: a self-hosted job service.

Declare a kind with `@conveyor.task`, run `conveyor up`, submit jobs over the CLI, the REST API
or `conveyor.Client`.
"""

from typing import TYPE_CHECKING, Any

from conveyor.errors import ConveyorError
from conveyor.kinds.registry import schedule, task
from conveyor.limits import Concurrency, RateLimit
from conveyor.models import Job, JobState, NewJob, Progress
from conveyor.schedules.declare import Cron, Every
from conveyor.worker.context import Context, JobCancelled, PermanentError
from conveyor.worker.continuation import ChildOutcome, Children, Continue

__all__ = [
    "AsyncClient",
    "ChildOutcome",
    "Children",
    "Client",
    "Concurrency",
    "Context",
    "Continue",
    "ConveyorError",
    "Cron",
    "Every",
    "Job",
    "JobCancelled",
    "JobState",
    "NewJob",
    "PermanentError",
    "Progress",
    "RateLimit",
    "schedule",
    "task",
]

if TYPE_CHECKING:
    from conveyor.client import AsyncClient, Client


def __getattr__(name: str) -> Any:
    # The HTTP clients load httpx; import them only when asked, not in every worker child.
    if name in ("Client", "AsyncClient"):
        from conveyor import client

        return getattr(client, name)
    raise AttributeError(f"module 'conveyor' has no attribute {name!r}")
