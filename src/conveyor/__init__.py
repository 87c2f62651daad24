"""conveyor: a self-hosted job service.

Declare a kind with `@conveyor.task`, run `conveyor up`, submit jobs over the CLI, the REST API
or `conveyor.Client`.
"""

import importlib
from typing import TYPE_CHECKING, Any

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
    from conveyor.errors import ConveyorError
    from conveyor.kinds.registry import schedule, task
    from conveyor.limits import Concurrency, RateLimit
    from conveyor.models import Job, NewJob, Progress
    from conveyor.schedules.declare import Cron, Every
    from conveyor.states import JobState
    from conveyor.worker.context import Context, JobCancelled, PermanentError
    from conveyor.worker.continuation import ChildOutcome, Children, Continue

# Where each public name lives. They load on first use (PEP 562), so `import conveyor` (and
# every `conveyor` command, `--help` included) pays only for what it touches: the HTTP clients
# need httpx, the models pydantic, neither of which a worker child or the CLI's help needs.
_HOMES = {
    "AsyncClient": "conveyor.client",
    "ChildOutcome": "conveyor.worker.continuation",
    "Children": "conveyor.worker.continuation",
    "Continue": "conveyor.worker.continuation",
    "Client": "conveyor.client",
    "Concurrency": "conveyor.limits",
    "Context": "conveyor.worker.context",
    "ConveyorError": "conveyor.errors",
    "Cron": "conveyor.schedules.declare",
    "Every": "conveyor.schedules.declare",
    "Job": "conveyor.models",
    "JobCancelled": "conveyor.worker.context",
    "JobState": "conveyor.states",
    "NewJob": "conveyor.models",
    "PermanentError": "conveyor.worker.context",
    "Progress": "conveyor.models",
    "RateLimit": "conveyor.limits",
    "schedule": "conveyor.kinds.registry",
    "task": "conveyor.kinds.registry",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'conveyor' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
