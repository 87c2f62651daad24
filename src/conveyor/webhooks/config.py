"""What a webhook is (`WebhookSpec`), which events it wants, and the dispatcher's settings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from conveyor import errors
from conveyor.models import JobEvent
from conveyor.webhooks.ssrf import CallbackPolicy

FINAL_EVENTS = ("job.succeeded", "job.failed", "job.cancelled")
JOB_EVENTS = frozenset({"*", "job.*", "job.progress", "job.log", "job.queued", "job.scheduled",
                        "job.running", *FINAL_EVENTS})  # fmt: skip
WORKFLOW_EVENTS = frozenset({"*", "workflow.*", "workflow.running", "workflow.succeeded",
                             "workflow.failed", "workflow.cancelled"})  # fmt: skip
SECRET_ID = r"^[A-Za-z0-9_.:-]{1,100}$"  # noqa: S105 - a name pattern, not a secret


class WebhookSettings(BaseSettings):
    """`CONVEYOR_WEBHOOK_*` settings of the dispatcher."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_WEBHOOK_", extra="ignore")

    dispatcher: bool = Field(True, description="Run a dispatcher inside `conveyor worker`.")
    secrets: str = Field(
        "", description="Comma-separated whsec_ secrets for webhooks without a secret_id."
    )
    backoff_s: float = Field(5.0, gt=0, description="First retry delay; doubles each attempt.")
    backoff_max_s: float = Field(3600.0, gt=0, description="Longest delay between attempts.")
    horizon_s: float = Field(3 * 86400.0, gt=0, description="Give up this long after the event.")
    timeout_s: float = Field(10.0, gt=0, description="Per-attempt time limit.")
    max_response_bytes: int = Field(64 * 1024, ge=0, description="Response bytes read at most.")
    poll_s: float = Field(1.0, gt=0, description="How often the outbox is polled.")
    lease_s: float = Field(30.0, gt=0, description="One active dispatcher per store: lease.")
    concurrency: int = Field(8, ge=1, le=256, description="Deliveries in flight at once.")
    log_retention_s: float = Field(
        7 * 86400.0, gt=0, description="Finished deliveries are kept this long in the log."
    )

    @property
    def secret_list(self) -> list[str]:
        return [s.strip() for s in self.secrets.split(",") if s.strip()]


class WebhookSpec(BaseModel):
    """Where to send a job's events: `{"url": ..., "events": [...], "secret_id": ...}`.

    `events` lists event types (`job.succeeded`, `job.failed`, `job.cancelled`, `job.queued`,
    `job.running`, `job.scheduled`, `job.progress`, `job.log`), `job.*` for every state change
    or `*` for everything; by default every state change is sent. `secret_id` names a signing
    secret created with `conveyor webhooks secret create`; without it the default secret signs.
    """

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048)
    events: list[str] | None = Field(None, max_length=20)
    secret_id: str | None = Field(None, pattern=SECRET_ID)
    format: Literal["standard", "swissai"] = "standard"
    service: str | None = Field(None, max_length=200, description="Swiss AI: service slug.")
    service_url: str | None = Field(None, max_length=2048, description="Swiss AI: our URL.")

    def wants(self, event_type: str) -> bool:
        if self.format == "swissai":
            return event_type in FINAL_EVENTS
        transition = event_type not in ("job.progress", "job.log")
        if self.events is None:
            return transition
        for pattern in self.events:
            if pattern in ("*", event_type):
                return True
            # `job.*` / `workflow.*`: every state change of a job / of a workflow
            if pattern.endswith(".*") and event_type.startswith(pattern[:-1]) and transition:
                return True
        return False


def event_type(event: JobEvent) -> str:
    """`job.<state>` for state changes, `job.progress`, `job.log`."""
    if event.type == "state":
        return f"job.{event.data.get('state', 'unknown')}"
    return f"job.{event.type}"


def parse_spec(raw: Any) -> WebhookSpec:
    """A webhook as a job or queue stores it; `InvalidInputError` explains what is wrong."""
    if isinstance(raw, WebhookSpec):
        return raw
    try:
        return WebhookSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'webhook'}: {e['msg']}" for e in exc.errors()
        )
        raise errors.InvalidInputError(f"invalid webhook: {problems}") from None


def validate_webhook(
    raw: Any, policy: CallbackPolicy | None = None, known: frozenset[str] = JOB_EVENTS
) -> dict[str, Any]:
    """Check a webhook when it is registered: shape, event names (`known`: a job's, or a
    workflow's) and the SSRF guard.

    Returns the normalised spec to store with the job (or workflow).
    """
    spec = parse_spec(raw)
    if known is WORKFLOW_EVENTS and spec.format != "standard":
        raise errors.InvalidInputError("a workflow's webhook uses the standard format")
    unknown = sorted(set(spec.events or ()) - known)
    if unknown:
        raise errors.InvalidInputError(
            f"unknown webhook events {unknown}; use {sorted(known)}", events=unknown
        )
    (policy or CallbackPolicy.from_env()).check(spec.url, what="webhook URL")
    return spec.model_dump(exclude_none=True, exclude_defaults=True) | {"url": spec.url}
