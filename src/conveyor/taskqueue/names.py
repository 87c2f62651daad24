"""How Task Queue names map onto conveyor: queues, kinds, tags, and the errors of the API.

A Task Queue `{project}/{taskqueue}` is the conveyor queue `<project>.<taskqueue>`. Tasks whose
tag names a *route* (tag `task`: the render service's input) are jobs of the route's kind in
the queue `<project>.<taskqueue>.<suffix>`, so conveyor workers can serve that queue without
ever claiming the raw tasks (such as `result` tasks) that wait for Task Queue clients. Leasing
through the API covers both queues.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PROJECT = re.compile(r"^(?:[a-z0-9][a-z0-9.-]*:)?[a-z0-9][a-z0-9-]{0,62}$")
TASKQUEUE = re.compile(r"^[A-Za-z0-9-]{1,100}$")
TASK_NAME = re.compile(r"^[A-Za-z0-9_-]{1,500}$")
APP_PREFIX = re.compile(r"^[a-z]~")  # `b~project`, `s~project`: App Engine partition prefixes
MAX_QUEUE = 100

#: Kind of a raw task: conveyor never runs it, Task Queue clients lease it.
RAW_KIND = "taskqueue.task"
#: Job tag of a task inserted without a tag (so a lease can group by the empty tag).
UNTAGGED = "taskqueue:untagged"


@dataclass(frozen=True)
class Route:
    """Tasks with this tag run as conveyor jobs of `kind` in the queue `<base>.<suffix>`."""

    kind: str
    suffix: str
    max_attempts: int
    backoff_s: float
    timeout_s: float | None


#: No backoff: as in Task Queue, a task whose lease ran out can be leased again at once.
ROUTES: dict[str, Route] = {
    "task": Route(kind="render.taskqueue", suffix="render", max_attempts=6, backoff_s=0.0,
                  timeout_s=300.0),
}  # fmt: skip
KINDS = frozenset({RAW_KIND, *(r.kind for r in ROUTES.values())})


class TaskQueueError(Exception):
    """An error answer in Google's JSON error shape."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "errors": [{"domain": "global", "reason": self.reason, "message": self.message}],
                "code": self.status,
                "message": self.message,
            }
        }


def bad_request(message: str) -> TaskQueueError:
    return TaskQueueError(400, "badRequest", message)


def not_found(message: str) -> TaskQueueError:
    return TaskQueueError(404, "notFound", message)


@dataclass(frozen=True)
class QueueRef:
    """A Task Queue, named as in the API path."""

    project: str
    taskqueue: str

    @classmethod
    def parse(cls, project: str, taskqueue: str) -> QueueRef:
        project = APP_PREFIX.sub("", project, count=1)
        if not PROJECT.match(project):
            raise bad_request(f"Invalid project name {project!r}.")
        if not TASKQUEUE.match(taskqueue):
            raise bad_request(
                f"Invalid task queue name {taskqueue!r}: use 1-100 letters, digits or '-'."
            )
        ref = cls(project, taskqueue)
        if len(ref.queue_for(max(ROUTES.values(), key=lambda r: len(r.suffix)))) > MAX_QUEUE:
            raise bad_request("The project and task queue names are too long together.")
        return ref

    @property
    def base(self) -> str:
        """The conveyor queue of raw tasks."""
        return f"{self.project}.{self.taskqueue}"

    def queue_for(self, route: Route | None) -> str:
        return self.base if route is None else f"{self.base}.{route.suffix}"

    @property
    def queues(self) -> list[str]:
        """Every conveyor queue holding this Task Queue's tasks."""
        return [self.base, *(self.queue_for(r) for r in ROUTES.values())]

    @property
    def id(self) -> str:
        return self.taskqueue


def job_tag(tag: str) -> str:
    return tag or UNTAGGED


def task_tag(tags: list[str]) -> str:
    for tag in tags:
        return "" if tag == UNTAGGED else tag
    return ""
