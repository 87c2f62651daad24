"""Bearer API keys with scopes, stored hashed in the store's `api_keys` records.

A raw key looks like `cvk_<key_id>_<secret>`: the id finds the record in one lookup, and the
sha256 of the whole key is compared in constant time with the stored hash. The raw key is shown
once, at creation, and never stored.

Scopes: `read` (see jobs, kinds, queues, files), `submit` (submit, cancel, retry, upload),
`work` (the lease API for external workers) and `admin` (everything, including delete).

A key may carry a quota: requests a minute and/or jobs submitted a minute. Both are token
buckets in the store (`take_tokens`), so they hold across every API replica; over it, the
answer is 429 problem+json (`quota-exceeded`) with `Retry-After`.

When no key exists and the server listens on loopback only, auth is off: a local single-user
service needs no token. `conveyor api` refuses to listen elsewhere until a key exists; a request
reaching a non-loopback listener in that state is refused.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from conveyor import errors
from conveyor.api.deps import per_app
from conveyor.store import Store

COLLECTION = "api_keys"
PREFIX = "cvk_"
Scope = Literal["read", "submit", "work", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "submit", "work", "admin")

#: How long "no API key exists" is believed before the store is asked again.
NO_KEYS_RECHECK_S = 1.0
#: Bad keys tolerated per client address (and per presented key id) within the window before
#: 429; valid keys are never refused.
MAX_FAILURES = 10
FAILURE_WINDOW_S = 60.0


CHALLENGE = {"WWW-Authenticate": 'Bearer realm="conveyor"'}


def unauthorized(detail: str) -> HTTPException:
    """401: no usable credentials (problem type `unauthorized`), with the Bearer challenge."""
    return HTTPException(401, detail, headers=CHALLENGE)


QUOTA_PERIOD_S = 60.0


@dataclass(frozen=True, slots=True)
class Quota:
    """What one key may do a minute (None: no bound)."""

    requests_per_min: int | None = None
    jobs_per_min: int | None = None

    @classmethod
    def read(cls, value: Any) -> Quota | None:
        if not isinstance(value, dict):
            return None
        found = cls(_positive(value.get("requests_per_min")), _positive(value.get("jobs_per_min")))
        return found if found.requests_per_min or found.jobs_per_min else None

    def public(self) -> dict[str, int | None]:
        return {"requests_per_min": self.requests_per_min, "jobs_per_min": self.jobs_per_min}


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An API key as stored (without the secret)."""

    id: str
    name: str
    scopes: frozenset[str]
    created_at: datetime
    revoked_at: datetime | None = None
    quota: Quota | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def public(self) -> dict[str, Any]:
        """What `keys list` and the API show: never the hash."""
        return {
            "id": self.id,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "quota": self.quota.public() if self.quota else None,
        }


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key, or the local user when auth is off."""

    key_id: str | None
    name: str
    scopes: frozenset[str] = field(default_factory=lambda: frozenset(SCOPES))
    quota: Quota | None = None

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


LOCAL = Principal(key_id=None, name="local")


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def _record(key_id: str, value: dict[str, Any]) -> KeyRecord:
    revoked = value.get("revoked_at")
    return KeyRecord(
        id=key_id,
        name=str(value.get("name", "")),
        scopes=frozenset(value.get("scopes", ())),
        created_at=datetime.fromtimestamp(float(value.get("created_at", 0)), UTC),
        revoked_at=datetime.fromtimestamp(float(revoked), UTC) if revoked is not None else None,
        quota=Quota.read(value.get("quota")),
    )


def check_scopes(scopes: Iterable[str]) -> list[str]:
    """The scopes, validated and sorted; `ValueError` names the unknown ones."""
    wanted = sorted(set(scopes))
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown or not wanted:
        raise ValueError(
            f"unknown scopes {', '.join(unknown) or '(none given)'}; use {', '.join(SCOPES)}"
        )
    return wanted


def create_key(
    store: Store, name: str, scopes: Sequence[str], quota: Quota | None = None
) -> tuple[str, str]:
    """Create a key; return `(key_id, raw_key)`. The raw key cannot be recovered later."""
    wanted = check_scopes(scopes)
    key_id = secrets.token_hex(6)
    raw = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    value: dict[str, Any] = {
        "name": name, "scopes": wanted, "hash": _hash(raw), "created_at": store.now()
    }  # fmt: skip
    if quota is not None and (quota.requests_per_min or quota.jobs_per_min):
        value["quota"] = quota.public()
    store.put_record(COLLECTION, key_id, value)
    return key_id, raw


def install_key(store: Store, name: str, scopes: Sequence[str], raw: str) -> str:
    """Store a key whose raw value comes from elsewhere (a deployment secret); return its id.

    Idempotent, so a deployment can run it at every start: an existing key with this value is
    left as it is. `ValueError` if `raw` is not a well-formed key (`cvk_<id>_<secret>`, a
    secret of 32+ characters), so weak secrets are refused.
    """
    wanted = check_scopes(scopes)
    key_id, sep, secret = raw.removeprefix(PREFIX).partition("_")
    well_formed = raw.startswith(PREFIX) and sep and key_id.isalnum() and len(key_id) <= 32
    if not well_formed or len(secret) < 32:
        raise ValueError(
            "a key must look like cvk_<id>_<secret> with a secret of at least 32 characters;"
            " `conveyor keys create` prints one"
        )
    existing = store.get_record(COLLECTION, key_id)
    if existing is not None and hmac.compare_digest(str(existing.get("hash", "")), _hash(raw)):
        return key_id
    if existing is not None:
        raise ValueError(f"another key already uses the id {key_id!r}")
    store.put_record(
        COLLECTION,
        key_id,
        {"name": name, "scopes": wanted, "hash": _hash(raw), "created_at": store.now()},
    )
    return key_id


def set_quota(store: Store, key_id: str, quota: Quota | None) -> KeyRecord:
    """Set (or with None, remove) a key's quota; every API replica applies it to the key's
    next request. `KeyError` if the key is unknown."""
    value = store.get_record(COLLECTION, key_id)
    if value is None:
        raise KeyError(key_id)
    if quota is None or not (quota.requests_per_min or quota.jobs_per_min):
        value.pop("quota", None)
    else:
        value["quota"] = quota.public()
    store.put_record(COLLECTION, key_id, value)
    return _record(key_id, value)


def take_quota(store: Store, principal: Principal, what: str, n: int = 1) -> None:
    """Count `n` requests or jobs against the caller's quota; `QuotaExceededError` (429 with
    Retry-After) when it is used up. Global across API replicas: the bucket is in the store."""
    quota = principal.quota
    rate = None if quota is None else getattr(quota, f"{what}_per_min")
    if rate is None or principal.key_id is None:
        return
    if n > rate:
        raise errors.QuotaExceededError(
            f"{n} {what} at once is more than the key's quota of {rate} a minute",
            retry_after_s=QUOTA_PERIOD_S,
        )
    wait = store.take_tokens(f"quota:{principal.key_id}:{what}", n, rate, QUOTA_PERIOD_S)
    if wait > 0:
        raise errors.QuotaExceededError(
            f"the API key {principal.name!r} may make {rate} {what} a minute; try again in"
            f" {wait:.1f}s",
            retry_after_s=wait,
            quota=rate,
        )


def list_keys(store: Store) -> list[KeyRecord]:
    return [_record(key_id, value) for key_id, value in store.list_records(COLLECTION)]


def revoke_key(store: Store, key_id: str) -> KeyRecord:
    """Revoke a key at once; `KeyError` if unknown. The record stays, marked revoked."""
    value = store.get_record(COLLECTION, key_id)
    if value is None:
        raise KeyError(key_id)
    if value.get("revoked_at") is None:
        value["revoked_at"] = store.now()
        store.put_record(COLLECTION, key_id, value)
    return _record(key_id, value)


def verify_key(store: Store, raw: str) -> KeyRecord | None:
    """The key's record if `raw` is a valid, unrevoked key; else None."""
    if not raw.startswith(PREFIX):
        return None
    key_id, sep, _ = raw[len(PREFIX) :].partition("_")
    if not sep or not key_id.isalnum() or len(key_id) > 32:
        return None
    value = store.get_record(COLLECTION, key_id)
    expected = str(value.get("hash", "")) if value else "0" * 64
    # Compare even when the record is missing, so timing says nothing about which ids exist.
    matches = hmac.compare_digest(_hash(raw), expected)
    if value is None or not matches:
        return None
    record = _record(key_id, value)
    return None if record.revoked else record


def presented_id(raw: str) -> str:
    """The key id part of a presented key (`cvk_<id>_<secret>`), bounded; "" if none."""
    key_id, sep, _ = raw.removeprefix(PREFIX).partition("_")
    return key_id[:32] if sep and raw.startswith(PREFIX) else ""


@functools.lru_cache(maxsize=1024)
def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class FailureLimiter:
    """Counts bad keys per client address in a sliding window (bounded memory)."""

    def __init__(
        self, limit: int = MAX_FAILURES, window_s: float = FAILURE_WINDOW_S, size: int = 10_000
    ) -> None:
        self.limit, self.window_s, self.size = limit, window_s, size
        self._hits: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> list[float]:
        hits = [t for t in self._hits.get(client, ()) if now - t < self.window_s]
        if hits:
            self._hits[client] = hits
        else:
            self._hits.pop(client, None)
        return hits

    def blocked_for(self, client: str) -> float:
        """Seconds until this client may try again (0 if it may now)."""
        now = time.monotonic()
        with self._lock:
            hits = self._recent(client, now)
            if len(hits) < self.limit:
                return 0.0
            return max(0.0, self.window_s - (now - hits[-self.limit]))

    def fail(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            hits = self._recent(client, now)
            hits.append(now)
            self._hits[client] = hits[-self.limit :]
            self._hits.move_to_end(client)
            while len(self._hits) > self.size:
                self._hits.popitem(last=False)


class Authenticator:
    """Resolves a request to a `Principal`; one per app (kept on `app.state.auth`)."""

    def __init__(self, store: Store, bind_host: str | None = None) -> None:
        self.store = store
        self.bind_host = bind_host
        self.limiter = FailureLimiter()
        self._keys_exist = False  # once a key exists, auth stays on (revoked keys remain)
        self._checked_at = -NO_KEYS_RECHECK_S

    def keys_exist(self) -> bool:
        if not self._keys_exist:
            self._keys_exist = bool(self.store.list_records(COLLECTION))
            self._checked_at = time.monotonic()
        return self._keys_exist

    def open_locally(self, request: Request) -> bool | None:
        """Without a store read: True if auth is off for this request, False if on, None if
        the answer needs a fresh look at the store (the no-keys answer is reused for a second,
        so a key created while the server runs takes effect within a second)."""
        if self._keys_exist or not self._local_listener(request):
            return False
        if time.monotonic() - self._checked_at < NO_KEYS_RECHECK_S:
            return True
        return None

    def _local_listener(self, request: Request) -> bool:
        if self.bind_host is not None:
            return is_loopback(self.bind_host)
        server = request.scope.get("server")
        return server is not None and is_loopback(str(server[0]))

    def authenticate(self, request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            if not self.keys_exist() and self._local_listener(request):
                return LOCAL
            raise unauthorized(
                "send an API key: `Authorization: Bearer <key>` (create one with"
                " `conveyor keys create`)"
            )
        raw = token.strip()
        record = verify_key(self.store, raw) if scheme.lower() == "bearer" else None
        if record is not None:
            # A valid key always passes: behind a proxy one address carries every client, and
            # someone else's bad keys must not lock them all out.
            principal = Principal(record.id, record.name, record.scopes, record.quota)
            if principal.quota is not None and principal.quota.requests_per_min:
                take_quota(self.store, principal, "requests")
            return principal
        # Bad attempts are limited per address and per presented key id, so guessing the
        # secret of one key (or any key from one address) slows down to a 429.
        client = request.client.host if request.client else "?"
        key_id = presented_id(raw)
        # Text that names no key id shares no counter: it can never be anyone's valid key.
        counters = (f"ip:{client}", f"key:{key_id}") if key_id else (f"ip:{client}",)
        wait = max(self.limiter.blocked_for(counter) for counter in counters)
        if wait > 0:
            raise HTTPException(
                429,
                "too many requests with invalid API keys from this address or for this key;"
                " try again later",
                headers={"Retry-After": str(int(wait) + 1)},
            )
        for counter in counters:
            self.limiter.fail(counter)
        raise unauthorized("the API key is invalid or revoked")


def authenticator(request: Request) -> Authenticator:
    bind_host = getattr(request.app.state, "bind_host", None)
    return per_app(request.app, "auth", lambda service: Authenticator(service.store, bind_host))


def require_scope(scope: Scope) -> Callable[[Request], Coroutine[Any, Any, Principal]]:
    """A FastAPI dependency: the caller's `Principal`, or 401/403/429 problem+json."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def dependency(request: Request) -> Principal:
        principal = await any_key(request)
        if not principal.allows(scope):
            raise HTTPException(403, f"the API key {principal.name!r} lacks the {scope!r} scope")
        return principal

    return dependency


async def any_key(request: Request) -> Principal:
    """A FastAPI dependency: the caller's `Principal` whatever its scopes, or 401/429
    problem+json (for envelopes whose parts check their own scopes, e.g. batches)."""
    auth = authenticator(request)
    if "authorization" not in request.headers and auth.open_locally(request):
        principal = LOCAL  # the hot path of a local, keyless server: no thread hop
    else:
        principal = await run_in_threadpool(auth.authenticate, request)
    request.state.principal = principal
    return principal
