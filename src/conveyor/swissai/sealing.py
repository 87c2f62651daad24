"""Sealing the S3 credentials a `/compute` request carries, so they are never stored in clear.

The API encrypts them (Fernet: AES-128-CBC + HMAC-SHA256) into the job's input; only a worker
holding the same server key can open them, and nothing else ever sees them in clear: not the
store, the event log, the API's job views, nor the logs. The key is `CONVEYOR_SECRET_KEY`
(any string; hashed to a Fernet key), else a random key kept in `<CONVEYOR_HOME>/secret.key`
(mode 0600) — API and workers on one machine share it; on several machines set the variable.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from conveyor import errors
from conveyor.settings import Settings

KEY_FILE = "secret.key"


def server_key(settings: Settings | None = None) -> bytes:
    """The Fernet key of this installation (created on first use when not configured)."""
    configured = os.environ.get("CONVEYOR_SECRET_KEY")
    if configured:
        return base64.urlsafe_b64encode(hashlib.sha256(configured.encode()).digest())
    home = (settings or Settings()).home
    path = Path(home) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first: use theirs
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(Fernet.generate_key())
    return path.read_bytes().strip()


def seal(values: dict[str, str], key: bytes | None = None) -> str:
    """Encrypt a small dict of secrets into a token."""
    return Fernet(key or server_key()).encrypt(json.dumps(values).encode()).decode()


def unseal(token: str, key: bytes | None = None) -> dict[str, str]:
    """Open a token from `seal`; `ConfigurationError` when the server key does not match."""
    try:
        opened: dict[str, str] = json.loads(Fernet(key or server_key()).decrypt(token.encode()))
    except (InvalidToken, ValueError):
        raise errors.ConfigurationError(
            "cannot open the sealed S3 credentials: the API and this worker use different"
            " server keys; set the same CONVEYOR_SECRET_KEY on both"
        ) from None
    return opened
