"""API keys: creation, hashing, verification, revocation, the bad-key limiter."""

from __future__ import annotations

import pytest

from conveyor.api import auth
from conveyor.store import open_store


def test_key_is_stored_hashed_and_verifies() -> None:
    store = open_store("memory://")
    key_id, raw = auth.create_key(store, "ci", ["read"])
    record = store.get_record(auth.COLLECTION, key_id)
    assert record is not None
    assert raw not in str(record)
    found = auth.verify_key(store, raw)
    assert found is not None
    assert found.id == key_id
    assert found.allows("read")
    assert not found.allows("submit")


@pytest.mark.parametrize("mutate", [lambda r: r + "x", lambda r: r[:-1], lambda r: "Bearer " + r])
def test_wrong_keys_do_not_verify(mutate: object) -> None:
    store = open_store("memory://")
    _, raw = auth.create_key(store, "ci", ["admin"])
    assert auth.verify_key(store, mutate(raw)) is None  # type: ignore[operator]
    assert auth.verify_key(store, "cvk_unknown_secret") is None
    assert auth.verify_key(store, "") is None


def test_revoked_key_stops_verifying() -> None:
    store = open_store("memory://")
    key_id, raw = auth.create_key(store, "ci", ["admin"])
    auth.revoke_key(store, key_id)
    assert auth.verify_key(store, raw) is None
    assert auth.list_keys(store)[0].revoked
    with pytest.raises(KeyError):
        auth.revoke_key(store, "nope")


def test_admin_implies_every_scope() -> None:
    store = open_store("memory://")
    _, raw = auth.create_key(store, "root", ["admin"])
    record = auth.verify_key(store, raw)
    assert record is not None
    assert all(record.allows(s) for s in auth.SCOPES)


def test_unknown_scope_is_refused() -> None:
    with pytest.raises(ValueError, match="bogus"):
        auth.check_scopes(["read", "bogus"])


def test_limiter_blocks_after_repeated_failures() -> None:
    limiter = auth.FailureLimiter(limit=3, window_s=60)
    for _ in range(3):
        assert limiter.blocked_for("1.2.3.4") == 0
        limiter.fail("1.2.3.4")
    assert limiter.blocked_for("1.2.3.4") > 0
    assert limiter.blocked_for("5.6.7.8") == 0


@pytest.mark.parametrize(
    ("host", "loop"),
    [("127.0.0.1", True), ("127.9.9.9", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("10.0.0.1", False), ("", False), (None, False)],
)  # fmt: skip
def test_is_loopback(host: str | None, loop: bool) -> None:
    assert auth.is_loopback(host) is loop


def test_installed_keys_come_from_a_secret_and_install_once() -> None:
    store = open_store("memory://")
    raw = "cvk_deploy1_" + "s" * 40
    key_id = auth.install_key(store, "ops", ["admin"], raw)
    assert auth.install_key(store, "ops", ["admin"], raw) == key_id, "idempotent"
    found = auth.verify_key(store, raw)
    assert found is not None and found.allows("submit")
    assert len(auth.list_keys(store)) == 1
    with pytest.raises(ValueError, match="at least 32"):
        auth.install_key(store, "weak", ["read"], "cvk_weak_short")
    with pytest.raises(ValueError, match="already uses"):
        auth.install_key(store, "clash", ["read"], "cvk_deploy1_" + "t" * 40)
