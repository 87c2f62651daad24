"""Request and response bodies of the /v1 API that are not domain models."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conveyor.models import JSON, Job, JobError, NewJob, Progress
from conveyor.service import MAX_BATCH


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BatchSubmit(Body):
    """Submit up to 1,000 jobs at once, atomically."""

    jobs: list[NewJob] = Field(min_length=1, max_length=MAX_BATCH)


class BatchResult(Body):
    jobs: list[Job]


class FileInfo(Body):
    name: str
    direction: Literal["in", "out"]
    size: int


class Upload(Body):
    """A staged file: name it in a submit's `files` as `{"<name>": "<id>"}`."""

    id: str
    name: str
    size: int


class FileList(Body):
    files: list[FileInfo]


class LeaseRequest(Body):
    """Lease up to `n` due jobs of this queue for `lease_s` seconds."""

    n: int = Field(1, ge=1, le=100)
    lease_s: float = Field(30.0, gt=0, le=3600)
    kinds: list[str] | None = Field(None, max_length=100, description="Only these kinds.")
    tag: str | None = Field(None, description="Only jobs carrying this tag.")
    worker: str = Field(
        "external", min_length=1, max_length=100, description="A name for this worker."
    )


class LeasedJob(Body):
    """A job handed to an external worker, with the token that fences every later call."""

    job: Job
    token: str
    expires_at: Any


class LeaseResult(Body):
    jobs: list[LeasedJob]


class HeartbeatRequest(Body):
    token: str = Field(min_length=1, max_length=200)
    lease_s: float = Field(30.0, gt=0, le=3600)
    progress: Progress | None = None
    logs: list[str] = Field(default_factory=list, max_length=1000)


class HeartbeatResult(Body):
    status: Literal["ok", "cancel"] = Field(
        description="`cancel`: the job was cancelled; stop it and call /fail or /release."
    )


class CompleteRequest(Body):
    token: str = Field(min_length=1, max_length=200)
    result: JSON = None


class FailRequest(Body):
    token: str = Field(min_length=1, max_length=200)
    error: JobError
    retry: bool = Field(True, description="False: fail for good, whatever attempts remain.")


class ReleaseRequest(Body):
    token: str = Field(min_length=1, max_length=200)


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries documenting problem+json answers."""
    return {status: {**PROBLEM, "description": "problem+json"} for status in statuses}


M = TypeVar("M", bound=BaseModel)


def build(cls: type[M], loc: str, **data: Any) -> M:
    """`cls(**data)` for a model a route assembles (path parameters and body together);
    a refusal is a 422 problem naming the fields under `loc`, as FastAPI's own checks are."""
    try:
        return cls(**data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": [loc, *e["loc"]]} for e in exc.errors(include_url=False)]
        ) from None
