"""Webhook deliveries of a job, as the webhook dispatcher logs them in the store's records
(collection `webhook_deliveries`, keys `<job_id>/<seq>-<n>`; see `conveyor.webhooks`).

Only what an operator needs is shown: event, endpoint (without credentials or query), status,
attempts and the last attempt's outcome. Bodies, headers, signatures and secret ids never are.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from conveyor.store import Store

COLLECTION = "webhook_deliveries"


def redact(url: Any) -> str:
    """A URL without credentials or query (either may carry a token): scheme, host, path."""
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unreadable URL)"
    query = "?…" if parts.query else ""
    return f"{parts.scheme}://{host}{port}{parts.path}{query}"


def _row(value: dict[str, Any]) -> dict[str, Any]:
    attempts = value.get("attempts") or []
    last = attempts[-1] if attempts and isinstance(attempts[-1], dict) else {}
    return {
        "event": value.get("event"),
        "url": redact(value["url"]) if value.get("url") else None,
        "status": value.get("status"),
        "attempts": value.get("attempt_count", len(attempts)),
        "at": last.get("at", value.get("created_at")),
        "code": last.get("status_code"),
        "error": last.get("error"),
        "duration_ms": last.get("duration_ms"),
    }


def for_job(store: Store, job_id: str) -> list[dict[str, Any]]:
    """The job's deliveries, oldest first."""
    from conveyor.webhooks.dispatcher import deliveries_of  # pending ones live elsewhere

    return [_row(value) for value in deliveries_of(store, job_id)]
