"""Signed webhooks delivered from the store's event feed (a durable outbox), SSRF-guarded.

`signing` (Standard Webhooks signatures), `ssrf` (the callback URL guard), `config`
(`WebhookSpec`, settings), `endpoints` (secrets, queue defaults, disabled endpoints),
`sender` (one guarded request), `dispatcher` (outbox → deliveries → attempts).
"""

from __future__ import annotations

from conveyor.webhooks.config import WebhookSettings, WebhookSpec, validate_webhook
from conveyor.webhooks.signing import WebhookVerificationError, generate_secret, sign, verify
from conveyor.webhooks.ssrf import CallbackPolicy, UnsafeURLError

__all__ = [
    "CallbackPolicy",
    "UnsafeURLError",
    "WebhookSettings",
    "WebhookSpec",
    "WebhookVerificationError",
    "generate_secret",
    "sign",
    "validate_webhook",
    "verify",
]
