"""conveyor: a self-hosted job service.

Declare a kind with `@conveyor.task`, run `conveyor up`, submit jobs over the CLI, the REST API
or `conveyor.Client`.
"""

from conveyor.errors import ConveyorError
from conveyor.kinds.registry import task
from conveyor.models import Job, JobState, NewJob, Progress
from conveyor.worker.context import Context, JobCancelled, PermanentError

__all__ = [
    "Context",
    "ConveyorError",
    "Job",
    "JobCancelled",
    "JobState",
    "NewJob",
    "PermanentError",
    "Progress",
    "task",
]
