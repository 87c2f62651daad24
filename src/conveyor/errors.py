"""Errors raised by conveyor.

Every error derives from `ConveyorError`, and its docstring is the default message. Each carries
a stable `type` (used as the RFC 9457 problem type by the API) and the HTTP status it maps to.

    ConveyorError
    ├── ConfigurationError
    ├── StoreUnavailableError
    ├── JobNotFoundError
    ├── KindNotFoundError
    ├── ScheduleNotFoundError
    ├── LimitNotFoundError
    ├── AlreadyExistsError
    ├── QuotaExceededError
    ├── WorkflowNotFoundError
    ├── InvalidInputError
    │   └── InvalidWorkflowError
    ├── InvalidStateError
    ├── StaleLeaseError
    ├── IdempotencyConflictError
    └── FileError
"""

from __future__ import annotations

from typing import Any


class ConveyorError(Exception):
    """Unexpected job service error."""

    type = "internal"
    status = 500

    def __init__(self, message: str | None = None, **details: Any) -> None:
        super().__init__(message or self.__doc__)
        self.details = details

    @property
    def message(self) -> str:
        return str(self)


class ConfigurationError(ConveyorError):
    """The configuration is invalid."""

    type = "configuration"
    status = 500


class StoreUnavailableError(ConveyorError):
    """The job store cannot be reached; try again shortly."""

    type = "store-unavailable"
    status = 503


class JobNotFoundError(ConveyorError):
    """No job with this id exists."""

    type = "job-not-found"
    status = 404


class KindNotFoundError(ConveyorError):
    """No kind with this name is registered."""

    type = "kind-not-found"
    status = 404


class ScheduleNotFoundError(ConveyorError):
    """No schedule with this id exists."""

    type = "schedule-not-found"
    status = 404


class LimitNotFoundError(ConveyorError):
    """No limit on this target exists."""

    type = "limit-not-found"
    status = 404


class AlreadyExistsError(ConveyorError):
    """Something with this id already exists."""

    type = "already-exists"
    status = 409


class QuotaExceededError(ConveyorError):
    """This API key's quota is used up for now; try again after `retry_after_s` seconds."""

    type = "quota-exceeded"
    status = 429

    @property
    def retry_after_s(self) -> float:
        return float(self.details.get("retry_after_s", 1.0))


class WorkflowNotFoundError(ConveyorError):
    """No workflow with this id exists."""

    type = "workflow-not-found"
    status = 404


class InvalidInputError(ConveyorError):
    """The input does not match the kind's schema."""

    type = "invalid-input"
    status = 422


class InvalidWorkflowError(InvalidInputError):
    """The workflow document is invalid; `step` names the first step at fault."""

    type = "invalid-workflow"


class InvalidStateError(ConveyorError):
    """The job is not in a state that allows this operation."""

    type = "invalid-state"
    status = 409


class StaleLeaseError(ConveyorError):
    """The lease token is not the job's current lease; nothing was changed."""

    type = "stale-lease"
    status = 409


class IdempotencyConflictError(ConveyorError):
    """This Idempotency-Key was already used with a different request body."""

    type = "idempotency-conflict"
    status = 422


class FileError(ConveyorError):
    """The file operation is not allowed."""

    type = "invalid-file"
    status = 400
