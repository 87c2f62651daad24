"""Settings from `CONVEYOR_*` environment variables (and flags that override them)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class Settings(BaseSettings):
    """Core: where data lives, which kinds and queues workers serve, leases and timings."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    home: Path = Field(Path(".conveyor"), description="Where local data lives by default.")
    store: str | None = Field(None, description="Store URL; default sqlite:///<home>/conveyor.db")
    storage: str | None = Field(None, description="Blob storage URL; default file://<home>/files")
    imports: str = Field(
        "conveyor.kinds.demo", description="Comma-separated modules that declare kinds."
    )
    queues: str = Field(
        "",
        description="Comma-separated queues a worker serves (default: the queues of the kinds"
        " it imports).",
    )
    concurrency: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=256,
        description="Child processes per worker (default: the number of CPUs).",
    )
    slots: int = Field(
        10_000,
        ge=1,
        le=100_000,
        description="Jobs in flight per worker at most. Async and threaded kinds run many jobs"
        " per child process (an async kind up to its share of these slots, unless it sets"
        " `slots=`); other kinds one per child.",
    )
    lease_s: float = Field(30.0, gt=0, description="Lease length; renewed by heartbeats.")
    heartbeat_s: float = Field(2.0, gt=0, description="How often workers renew leases.")
    sweep_s: float = Field(5.0, gt=0, description="How often expired leases are rescued.")
    grace_s: float = Field(10.0, ge=0, description="Drain: time in-flight jobs get to finish.")
    cancel_grace_s: float = Field(3.0, ge=0, description="Cancel: time before the kill.")
    retention_s: float = Field(7 * 86400.0, ge=0, description="Finished jobs kept this long.")
    max_upload_bytes: int = Field(1 << 30, ge=1, description="Largest file upload accepted.")
    idempotency_window_s: float = Field(
        24 * 3600.0, gt=0, le=30 * 86400, description="How long Idempotency-Keys are remembered."
    )
    scheduler: bool = Field(
        True, description="Workers and `conveyor up` run the schedule ticker (0: this one not)."
    )
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest request line plus headers (431 beyond)."
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="Time for a request's headers to arrive (408, then closed)."
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log lines for a terminal (text) or one JSON object per line (json), with "
        "job id, kind, attempt, worker and trace id on lines about a job; `--log-format`.",
    )
    url: str | None = Field(None, description="A conveyor API to talk to instead of the store.")
    token: str | None = Field(None, description="Bearer API key for `url`.")

    @property
    def store_url(self) -> str:
        return self.store or f"sqlite:///{self.home / 'conveyor.db'}"

    @property
    def storage_url(self) -> str:
        return self.storage or f"file://{self.home / 'files'}"

    @property
    def import_list(self) -> list[str]:
        return _split(self.imports)

    @property
    def queue_list(self) -> list[str]:
        return _split(self.queues)
