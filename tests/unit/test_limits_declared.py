"""Limits declared on kinds: the rows they become, the concurrency key a job gets at submit,
and registration by workers that never overrides an admin's change."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor import Concurrency, RateLimit, errors
from conveyor.controls import Controls
from conveyor.limits import declare, register, resolve_key, set_by_admin
from conveyor.models import KindInfo, Limit, NewJob
from conveyor.service import Service
from conveyor.storage import open_storage
from conveyor.store import Store


def test_declarations_become_limit_rows() -> None:
    limits, source = declare("send", Concurrency(2, key="input.tenant"),
                             RateLimit(100, per_s=60, key="input.tenant"))  # fmt: skip
    assert source == "input.tenant"
    assert limits == (Limit(target="key:send", max_running=2, rate=100, per_s=60),)
    limits, source = declare("thumb", 4, RateLimit(10))
    assert source is None
    assert limits == (Limit(target="kind:thumb", max_running=4, rate=10, per_s=1),)
    limits, _ = declare("mixed", Concurrency(8), RateLimit(5, key="tag:tenant:"))
    assert {lim.target for lim in limits} == {"kind:mixed", "key:mixed"}


@pytest.mark.parametrize(
    ("concurrency", "rate", "says"),
    [
        (Concurrency(1, key="input.a"), RateLimit(1, key="input.b"), "different keys"),
        (Concurrency(1, key="input."), None, "cannot read a concurrency key"),
        (Concurrency(1, key="tag:"), None, "cannot read a concurrency key"),
        (Concurrency(1, strategy="cancel_newest"), None, "applies to key:"),
        (Concurrency(0), None, "greater than or equal to 1"),
    ],
)
def test_bad_declarations_fail_at_import(
    concurrency: Concurrency, rate: RateLimit | None, says: str
) -> None:
    with pytest.raises(errors.ConfigurationError, match=says):
        declare("k", concurrency, rate)


@pytest.mark.parametrize(
    ("source", "input", "tags", "key"),
    [
        ("input.tenant", {"tenant": "acme"}, [], "acme"),
        ("tenant", {"tenant": 42}, [], "42"),
        ("input.account.id", {"account": {"id": "a-1"}}, [], "a-1"),
        ("input.account.id", {"account": "flat"}, [], None),
        ("input.tenant", {}, [], None),
        ("input.tenant", {"tenant": ["a"]}, [], None),
        ("input.flag", {"flag": True}, [], "true"),
        ("tag:tenant:", {}, ["x", "tenant:globex"], "globex"),
        ("tag:tenant:", {}, ["x"], None),
        (None, {"tenant": "acme"}, [], None),
    ],
)
def test_the_concurrency_key_comes_from_the_input_or_a_tag(
    source: str | None, input: object, tags: list[str], key: str | None
) -> None:
    assert resolve_key(source, input, tags) == key


def test_a_key_longer_than_200_characters_is_invalid_input() -> None:
    with pytest.raises(errors.InvalidInputError, match="longer than 200"):
        resolve_key("input.t", {"t": "x" * 201}, [])


def test_submit_stores_the_key_from_the_registered_kind(store: Store, tmp_path: Path) -> None:
    store.register_kinds([KindInfo(name="send", concurrency_key="input.tenant")])
    service = Service(store, open_storage(f"file://{tmp_path}"))
    job = service.submit(NewJob(kind="send", input={"tenant": "acme"}))
    assert store.get(job.id).concurrency_key == "acme"


def test_workers_register_declared_limits_but_an_admins_change_wins(store: Store) -> None:
    declared = KindInfo(name="send", limits=[Limit(target="key:send", max_running=2)])
    register(store, [declared])
    assert [lim.max_running for lim in store.limits()] == [2]
    changed = KindInfo(name="send", limits=[Limit(target="key:send", max_running=3)])
    register(store, [changed])  # a new deployment changed the code: the code's value moves
    assert [lim.max_running for lim in store.limits()] == [3]
    set_by_admin(store, Limit(target="key:send", max_running=10), "ops")
    register(store, [changed])  # a worker restarts: the admin's value stays
    assert [lim.max_running for lim in store.limits()] == [10]


def test_the_limit_view_shows_running_waiting_held_and_busiest_keys(
    store: Store, tmp_path: Path
) -> None:
    store.register_kinds([KindInfo(name="send", concurrency_key="input.tenant")])
    service = Service(store, open_storage(f"file://{tmp_path}"))
    for tenant in ("a", "a", "a", "b"):
        service.submit(NewJob(kind="send", input={"tenant": tenant}))
    ops = Controls(service)
    view = ops.set_limit(Limit(target="key:send", max_running=1), by="ops")
    assert (view.source, view.by, view.waiting, view.running) == ("admin", "ops", 4, 0)
    claimed = store.claim(["default"], "w", 10, 60)
    assert sorted(j.concurrency_key for j in claimed) == ["a", "b"]  # one per key
    view = ops.limit("key:send")
    assert (view.running, view.waiting, view.held) == (2, 2, 2)
    assert [(k.key, k.running, k.waiting) for k in view.keys] == [("a", 1, 2), ("b", 1, 0)]
    ops.delete_limit("key:send")
    with pytest.raises(errors.LimitNotFoundError):
        ops.limit("key:send")
