"""Dashboard sessions: a signed HTTP-only cookie, CSRF tokens, and who the viewer is.

The cookie holds `{"k": key_id or null, "n": nonce, "t": issued_at}`, base64url-encoded and
signed with HMAC-SHA256 under a server secret kept in the store's records (so every API
process of one store accepts the same cookies, and a restart logs nobody out). It never holds
the API key itself. The key's record is read again on every request, so revoking a key ends its
sessions at once, and scopes always come from the record.

The CSRF token of a session is HMAC(secret, "csrf:" + nonce): forms carry it in a hidden field,
htmx requests in the `X-CSRF-Token` header. Logging in issues a new nonce (no fixation).
When the API runs without keys on loopback, visitors get an anonymous session: the dashboard is
open, but state-changing forms still need the token, so another site cannot post to it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from conveyor.api.auth import COLLECTION as KEYS
from conveyor.api.auth import LOCAL, Principal, _record, authenticator
from conveyor.api.deps import per_app
from conveyor.store import Store

COOKIE = "conveyor_session"
MAX_AGE_S = 12 * 3600
RECORDS = "dashboard"
SIGNING_RECORD = "session-secret"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


class LoginRequired(Exception):
    """The dashboard needs a session (keys exist) and the request has none."""


class Forbidden(Exception):
    """The viewer's key lacks a scope, or the CSRF token is missing or wrong."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def load_secret(store: Store) -> bytes:
    """The signing secret, created once per store; concurrent creators converge on one."""
    found = store.get_record(RECORDS, SIGNING_RECORD)
    if found is None:
        store.put_record(RECORDS, SIGNING_RECORD, {"secret": secrets.token_hex(32)})
        found = store.get_record(RECORDS, SIGNING_RECORD) or {}
    return bytes.fromhex(str(found["secret"]))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: bytes, payload: dict[str, Any]) -> str:
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    mac = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def unsign(secret: bytes, value: str, max_age_s: float = MAX_AGE_S) -> dict[str, Any] | None:
    """The payload if the signature is right and the cookie is not too old; else None."""
    body, _, mac = value.partition(".")
    try:
        expected = hmac.new(secret, body.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(mac)):
            return None
        payload = json.loads(_unb64(body))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("n"), str):
        return None
    if time.time() - float(payload.get("t", 0)) > max_age_s:
        return None
    return payload


def csrf_token(secret: bytes, nonce: str) -> str:
    return hmac.new(secret, f"csrf:{nonce}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking at the dashboard, and what they may do."""

    principal: Principal
    csrf: str
    signed_in: bool  # by an API key (False: the open, keyless loopback mode)

    def can(self, scope: str) -> bool:
        return self.principal.allows(scope)


def _secret(request: Request) -> bytes:
    return per_app(request.app, "dashboard_secret", lambda service: load_secret(service.store))


def new_session(request: Request, key_id: str | None) -> str:
    """Issue a fresh session (new nonce); the route wrapper sets it as the cookie."""
    cookie = sign(_secret(request), {"k": key_id, "n": secrets.token_urlsafe(16), "t": time.time()})
    request.state.set_session = cookie
    return cookie


def _resolve(request: Request) -> tuple[Viewer | None, bool]:
    """(viewer, auth_needed). The viewer is None when auth is needed and not given."""
    secret = _secret(request)
    payload = unsign(secret, request.cookies.get(COOKIE, ""))
    auth = authenticator(request)
    keys_exist = auth.keys_exist()
    open_mode = not keys_exist and auth._local_listener(request)
    if payload is None:
        if not open_mode:
            return None, True
        new_session(request, None)
        payload = unsign(secret, request.state.set_session) or {}
    csrf = csrf_token(secret, str(payload["n"]))
    key_id = payload.get("k")
    if isinstance(key_id, str):
        value = auth.store.get_record(KEYS, key_id)
        record = _record(key_id, value) if value is not None else None
        if record is None or record.revoked:
            return None, True
        principal = Principal(key_id=record.id, name=record.name, scopes=record.scopes)
        return Viewer(principal, csrf, signed_in=True), True
    if open_mode:
        return Viewer(LOCAL, csrf, signed_in=False), False
    return None, True


async def current_viewer(request: Request) -> Viewer:
    """FastAPI dependency: the viewer, or `LoginRequired`."""
    viewer, _ = await run_in_threadpool(_resolve, request)
    if viewer is None:
        raise LoginRequired()
    request.state.viewer = viewer
    return viewer


async def login_context(request: Request) -> tuple[Viewer | None, str]:
    """For the login page: the current viewer if any, and a CSRF token for the form."""
    viewer, _ = await run_in_threadpool(_resolve, request)
    if viewer is not None:
        return viewer, viewer.csrf
    secret = _secret(request)
    payload = unsign(secret, request.cookies.get(COOKIE, ""))
    if payload is None:
        new_session(request, None)
        payload = unsign(secret, request.state.set_session) or {}
    return None, csrf_token(secret, str(payload["n"]))


def check_csrf(request: Request, sent: str | None) -> None:
    """Raise `Forbidden` unless `sent` (form field or header) is this session's token."""
    secret = _secret(request)
    payload = unsign(secret, request.cookies.get(COOKIE, ""))
    token = sent or request.headers.get(CSRF_HEADER, "")
    if payload is None or not token:
        raise Forbidden("the form's security token is missing; reload the page and try again")
    if not hmac.compare_digest(csrf_token(secret, str(payload["n"])), token):
        raise Forbidden("the form's security token is wrong or expired; reload and try again")


def require(viewer: Viewer, scope: str) -> None:
    if not viewer.can(scope):
        raise Forbidden(f"your API key {viewer.principal.name!r} lacks the {scope!r} scope")
