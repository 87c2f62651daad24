"""Webhook state kept in store records: signing secrets, queue defaults, disabled endpoints.

Collections:
- `webhook_secrets/<secret_id>`: `{"secrets": ["whsec_new", "whsec_old"]}`; the first signs,
  all of them sign during a rotation. `default` signs webhooks without a `secret_id` (created
  on first use unless `CONVEYOR_WEBHOOK_SECRETS` provides the default secrets).
- `webhook_queue_defaults/<queue>`: a `WebhookSpec` for jobs of that queue without their own.
- `webhook_endpoints/<sha256(url)>`: `{"url", "disabled_at", "reason"}` once a receiver answered
  410 Gone; deliveries to it stop until `conveyor webhooks enable URL`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from conveyor import errors
from conveyor.store.base import Store
from conveyor.webhooks.config import WebhookSettings, WebhookSpec, parse_spec
from conveyor.webhooks.signing import decode_secret, generate_secret

SECRETS = "webhook_secrets"
QUEUE_DEFAULTS = "webhook_queue_defaults"
ENDPOINTS = "webhook_endpoints"
DEFAULT_SECRET_ID = "default"  # noqa: S105 - the name of the default secret
MAX_ACTIVE_SECRETS = 3


def secrets_for(store: Store, secret_id: str | None, settings: WebhookSettings) -> list[str]:
    """The secrets that sign a message for this secret id (newest first)."""
    if secret_id is None and settings.secret_list:
        return settings.secret_list
    record = store.get_record(SECRETS, secret_id or DEFAULT_SECRET_ID)
    if record and record.get("secrets"):
        return list(record["secrets"])
    if secret_id is None:
        return [rotate_secret(store, DEFAULT_SECRET_ID)]
    raise errors.ConfigurationError(
        f"no webhook secret {secret_id!r}; create it with `conveyor webhooks secret create"
        f" {secret_id}`"
    )


def rotate_secret(store: Store, secret_id: str, secret: str | None = None) -> str:
    """Add a new secret in front (older ones keep signing until dropped); return it."""
    new = secret or generate_secret()
    decode_secret(new)
    record = store.get_record(SECRETS, secret_id) or {}
    kept = [s for s in record.get("secrets", []) if s != new][: MAX_ACTIVE_SECRETS - 1]
    store.put_record(SECRETS, secret_id, {"secrets": [new, *kept]})
    return new


def drop_old_secrets(store: Store, secret_id: str) -> int:
    """End a rotation: keep only the newest secret; return how many were dropped."""
    record = store.get_record(SECRETS, secret_id)
    if not record or not record.get("secrets"):
        raise errors.ConfigurationError(f"no webhook secret {secret_id!r}")
    old = len(record["secrets"]) - 1
    store.put_record(SECRETS, secret_id, {"secrets": record["secrets"][:1]})
    return old


def secret_exists(store: Store, secret_id: str) -> bool:
    return bool((store.get_record(SECRETS, secret_id) or {}).get("secrets"))


def set_queue_default(store: Store, queue: str, spec: dict[str, Any] | None) -> None:
    """Give a queue a default webhook (None removes it)."""
    if spec is None:
        store.delete_record(QUEUE_DEFAULTS, queue)
    else:
        store.put_record(QUEUE_DEFAULTS, queue, parse_spec(spec).model_dump(exclude_none=True))


def queue_default(store: Store, queue: str) -> WebhookSpec | None:
    record = store.get_record(QUEUE_DEFAULTS, queue)
    return None if record is None else parse_spec(record)


def endpoint_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:32]


def disabled(store: Store, url: str) -> dict[str, Any] | None:
    return store.get_record(ENDPOINTS, endpoint_key(url))


def disable(store: Store, url: str, at: float, reason: str) -> None:
    store.put_record(ENDPOINTS, endpoint_key(url), {"url": url, "disabled_at": at,
                                                    "reason": reason})  # fmt: skip


def enable(store: Store, url: str) -> bool:
    """Deliver to this endpoint again; True if it was disabled."""
    return store.delete_record(ENDPOINTS, endpoint_key(url))
