"""The Swiss AI Center wire models, field for field as the core engine and common-code use them."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class FieldDescriptionType(StrEnum):
    IMAGE_JPEG = "image/jpeg"
    IMAGE_PNG = "image/png"
    TEXT_PLAIN = "text/plain"
    TEXT_CSV = "text/csv"
    APPLICATION_JSON = "application/json"
    APPLICATION_PDF = "application/pdf"
    APPLICATION_ZIP = "application/zip"
    AUDIO_MPEG = "audio/mpeg"
    AUDIO_OGG = "audio/ogg"


class TaskStatus(StrEnum):
    PENDING = "pending"
    FETCHING = "fetching"
    PROCESSING = "processing"
    SAVING = "saving"
    FINISHED = "finished"
    ERROR = "error"
    SCHEDULED = "scheduled"
    SKIPPED = "skipped"
    ARCHIVED = "archived"
    UNAVAILABLE = "unavailable"


class ServiceStatus(StrEnum):
    AVAILABLE = "available"
    UNAVAILABLE = "unavailable"
    DISABLED = "disabled"
    SLEEPING = "sleeping"


class FieldDescription(BaseModel):
    name: str
    type: list[FieldDescriptionType]
    format_hint: Any | None = None


class ExecutionUnitTag(BaseModel):
    name: str
    acronym: str


class ServiceTaskTask(BaseModel):
    id: str = Field(pattern=r"^[0-9a-fA-F-]{32,36}$")  # a UUID
    data_in: list[str]
    data_out: list[str] | None = None
    status: TaskStatus
    error_message: str | None = None
    service_id: str
    pipeline_execution_id: str | None = None


class ServiceTask(BaseModel):
    """What the engine POSTs to `/compute`."""

    s3_access_key_id: str
    s3_secret_access_key: str
    s3_region: str
    s3_host: str
    s3_bucket: str
    task: ServiceTaskTask
    callback_url: str


class TaskUpdate(BaseModel):
    """What the service PATCHes to `callback_url` when a task ends."""

    service: str | None = None
    url: str | None = None
    data_out: list[str] | None = None
    status: TaskStatus | None = None
    error_message: str | None = None
