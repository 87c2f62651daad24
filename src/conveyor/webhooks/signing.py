"""Standard Webhooks signatures (https://www.standardwebhooks.com).

Each request carries `webhook-id` (the same on every retry of one message), `webhook-timestamp`
(integer seconds) and `webhook-signature`: space-separated `v1,<base64 HMAC-SHA256>` entries,
one per active secret, computed over `"{id}.{timestamp}.{body}"`. Secrets look like
`whsec_<base64 key>`; during a rotation an endpoint has two secrets and every message is signed
with both, so receivers can switch keys without losing a message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence

PREFIX = "whsec_"
DEFAULT_TOLERANCE_S = 300


class WebhookVerificationError(Exception):
    """The signature, timestamp or headers of a webhook do not check out."""


def generate_secret() -> str:
    """A new random `whsec_...` secret (32 random bytes)."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def decode_secret(secret: str) -> bytes:
    """The raw key of a `whsec_...` secret (the prefix is optional)."""
    raw = secret[len(PREFIX) :] if secret.startswith(PREFIX) else secret
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from None
    if len(key) < 16:
        raise ValueError("a webhook secret needs at least 16 bytes of key")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature."""
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(decode_secret(secret), to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign_headers(
    secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every secret given (rotation)."""
    if not secrets_:
        raise ValueError("no webhook secret to sign with")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets_),
    }


def verify(
    secret: str | Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Raise `WebhookVerificationError` unless one signature matches one of the secrets.

    `headers` may use any capitalisation. Messages older or newer than `tolerance_s` are
    refused (replay protection).
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lowered["webhook-id"]
        stamp = lowered["webhook-timestamp"]
        signatures = lowered["webhook-signature"]
    except KeyError as missing:
        raise WebhookVerificationError(f"missing header {missing.args[0]}") from None
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("invalid webhook-timestamp") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is outside the tolerance window")
    keys = [secret] if isinstance(secret, str) else list(secret)
    expected = [sign(key, msg_id, timestamp, body).split(",", 1)[1] for key in keys]
    for entry in signatures.split():
        version, _, value = entry.partition(",")
        if version != "v1":
            continue
        if any(hmac.compare_digest(value, candidate) for candidate in expected):
            return
    raise WebhookVerificationError("no matching signature")
