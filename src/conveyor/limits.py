"""Concurrency and rate limits declared on kinds, and the concurrency key of a job.

    @conveyor.task("send", concurrency=conveyor.Concurrency(2, key="input.tenant"),
                   rate_limit=conveyor.RateLimit(100, per_s=60))

declares at most 2 running jobs per tenant and at most 100 starts a minute of the kind. They
become `Limit` rows (`kind:send`, `key:send`) that workers register at start, and the store
enforces at claim time on every host. An admin changes them at run time (`/v1/limits`, `conveyor
limits`, the dashboard) and the change wins over the code until the admin deletes it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from conveyor import errors
from conveyor.models import JSON, KindInfo, Limit, LimitStrategy, Model
from conveyor.store.base import Store

log = logging.getLogger("conveyor.limits")

#: Where each limit came from: {"source": "code" | "admin", "by": who, "declared": the code's}.
SOURCES = "limit_sources"
KEY_MAX = 200


@dataclass(frozen=True)
class Concurrency:
    """At most `max_running` jobs of the kind running at once, on all hosts together; per
    concurrency key when `key` says where the key is (`input.<field>` or `tag:<prefix>`).

    `strategy` decides what a submit over the limit does: `queue` (it waits), `cancel_newest`
    (it is cancelled at once) or `cancel_in_progress` (the oldest one is cancelled)."""

    max_running: int
    key: str | None = None
    strategy: LimitStrategy = "queue"


@dataclass(frozen=True)
class RateLimit:
    """At most `rate` starts of the kind per `per_s` seconds, on all hosts together (jobs over
    it wait, they do not fail); per concurrency key when `key` is given."""

    rate: int
    per_s: float = 1.0
    key: str | None = None


class KeyUsage(Model):
    """One concurrency key under a per-key limit."""

    key: str
    running: int = 0
    waiting: int = 0


class LimitView(Limit):
    """A limit, who set it, and the jobs it applies to now."""

    source: Literal["code", "admin"] | None = Field(
        None, description="`code`: declared on a kind; `admin`: set at run time (wins)."
    )
    by: str | None = Field(None, description="The admin (API key name) who set it.")
    declared: Limit | None = Field(None, description="The code's limit, if an admin's wins.")
    running: int = Field(0, description="Jobs it applies to that are running.")
    waiting: int = Field(0, description="Jobs it applies to that are queued (capped at 1000).")
    held: int = Field(0, description="Of those, held back by a limit or a paused queue now.")
    keys: list[KeyUsage] = Field(default_factory=list, description="Busiest keys (key: only).")


def declare(
    kind: str, concurrency: Concurrency | int | None, rate_limit: RateLimit | None
) -> tuple[tuple[Limit, ...], str | None]:
    """The `Limit` rows and the concurrency key source a kind declares."""
    if isinstance(concurrency, int):
        concurrency = Concurrency(concurrency)
    keys = {c.key for c in (concurrency, rate_limit) if c is not None and c.key is not None}
    if len(keys) > 1:
        raise errors.ConfigurationError(
            f"kind {kind!r}: concurrency and rate_limit name different keys ({sorted(keys)});"
            " a job has one concurrency key"
        )
    source = keys.pop() if keys else None
    if source is not None:
        check_source(source)
    rows: dict[str, dict[str, Any]] = {}
    if concurrency is not None:
        target = f"key:{kind}" if concurrency.key else f"kind:{kind}"
        rows.setdefault(target, {}).update(
            max_running=concurrency.max_running, strategy=concurrency.strategy
        )
    if rate_limit is not None:
        target = f"key:{kind}" if rate_limit.key else f"kind:{kind}"
        rows.setdefault(target, {}).update(rate=rate_limit.rate, per_s=rate_limit.per_s)
    try:
        limits = tuple(Limit(target=t, **fields) for t, fields in sorted(rows.items()))
    except ValueError as exc:
        raise errors.ConfigurationError(f"kind {kind!r}: invalid limit: {exc}") from exc
    return limits, source


def check_source(source: str) -> str:
    """`input.<field>[.<field>...]` or `tag:<prefix>`; `ConfigurationError` otherwise."""
    if source.startswith("tag:"):
        if len(source) > 4:
            return source
    else:
        path = source.removeprefix("input.")
        if path and all(part for part in path.split(".")):
            return source
    raise errors.ConfigurationError(
        f"cannot read a concurrency key from {source!r}: use input.<field> or tag:<prefix>"
    )


def resolve_key(source: str | None, input: JSON, tags: Sequence[str]) -> str | None:
    """The job's concurrency key by its kind's `source`, or None (then per-key limits do not
    apply to it). Keys longer than KEY_MAX are refused as invalid input."""
    if source is None:
        return None
    value: Any
    if source.startswith("tag:"):
        prefix = source[4:]
        value = next((tag[len(prefix) :] for tag in tags if tag.startswith(prefix)), None)
    else:
        value = input
        for part in source.removeprefix("input.").split("."):
            value = value.get(part) if isinstance(value, dict) else None
    if value is None or isinstance(value, dict | list):
        return None
    key = value if isinstance(value, str) else _scalar(value)
    if len(key) > KEY_MAX:
        raise errors.InvalidInputError(
            f"the concurrency key ({source}) is longer than {KEY_MAX} characters"
        )
    return key


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def register(store: Store, kinds: Iterable[KindInfo]) -> None:
    """Register the limits kinds declare in code (workers do at start). A limit an admin set
    is left alone; a declaration that changed replaces the code's earlier one."""
    for kind in kinds:
        for limit in kind.limits:
            _register_one(store, limit)


def _register_one(store: Store, limit: Limit) -> None:
    declared = limit.model_dump(mode="json", exclude={"updated_at"})
    source = store.get_record(SOURCES, limit.target) or {}
    if source.get("source") == "admin":
        if source.get("declared") != declared:
            store.put_record(SOURCES, limit.target, {**source, "declared": declared})
        return
    current = {lim.target: lim for lim in store.limits()}.get(limit.target)
    if current is None or current.model_dump(mode="json", exclude={"updated_at"}) != declared:
        store.set_limit(limit)
    if source != {"source": "code", "declared": declared}:
        store.put_record(SOURCES, limit.target, {"source": "code", "declared": declared})


def set_by_admin(store: Store, limit: Limit, by: str) -> Limit:
    """An admin's limit: it takes effect at the next claim everywhere and wins over the code."""
    stored = store.set_limit(limit)
    source = store.get_record(SOURCES, limit.target) or {}
    store.put_record(SOURCES, limit.target, {**source, "source": "admin", "by": by})
    return stored


def delete(store: Store, target: str) -> bool:
    """Remove a limit (and whose it was). A limit declared in code comes back when a worker
    that declares it starts."""
    found = store.delete_limit(target)
    store.delete_record(SOURCES, target)
    return found
