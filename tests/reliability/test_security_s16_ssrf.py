"""S16: SSRF through the real submit paths, with a Python audit hook as the last line.

Every case goes through HTTP into a real uvicorn serving `create_app` in this process:
`POST /v1/jobs` with a `webhook` and, for the same URLs, the Swiss AI `callback_url`. Names
resolve through a stub resolver (no real DNS). An audit hook on `socket.connect` refuses (and
counts) any connection this process attempts to anything but the loopback ports the test owns,
so a failed defence cannot emit a packet. Then the delivery path: a name that was public at
submit and private at delivery (DNS rebinding), and a receiver redirecting to an internal
address, both through the webhook dispatcher.

Existing unit tests: tests/unit/test_ssrf.py (the guard's table, pinning, redirects, capped
reads), tests/webhooks/test_dispatcher.py (connect-time re-check, registration check).
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.models import KindInfo
from conveyor.store import open_store
from conveyor.webhooks import ssrf
from conveyor.webhooks.config import WebhookSettings
from conveyor.webhooks.dispatcher import Dispatcher, deliveries_of
from conveyor.webhooks.ssrf import CallbackPolicy
from tests.reliability.security_results import record
from tests.servers.http import serve_in_thread

PUBLIC = "93.184.216.34"
NAMES = {
    "localhost": ["127.0.0.1", "::1"],
    "public.test": [PUBLIC],
    "internal.test": ["10.0.0.5"],
    "metadata.test": ["169.254.169.254"],
    "mixed.test": [PUBLIC, "10.0.0.1"],
    "v6private.test": ["fd00::1"],
    "mapped.test": ["::ffff:127.0.0.1"],
    "cgnat.test": ["100.64.1.1"],
    "169.254.169.254.nip.io": ["169.254.169.254"],
}
REFUSED = [
    "http://127.0.0.1/", "http://localhost/", "http://LOCALHOST./", "http://[::1]/",
    "http://0.0.0.0/", "http://0/", "http://[::]/", "http://10.0.0.1/", "http://172.16.0.1/",
    "http://192.168.1.1/", "http://169.254.169.254/latest/meta-data/", "http://100.64.0.1/",
    "http://192.0.0.1/", "http://198.18.0.1/", "http://224.0.0.1/", "http://240.0.0.1/",
    "http://255.255.255.255/", "http://[fc00::1]/", "http://[fe80::1]/", "http://[ff02::1]/",
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:a9fe:a9fe]/", "http://[64:ff9b::7f00:1]/",
    "http://[2002:7f00:1::]/", "http://2130706433/", "http://0177.0.0.1/",
    "http://0x7f000001/", "http://0x7f.1/", "http://127.1/", "http://user:pass@public.test/",
    "http://user@public.test/", "file:///etc/passwd", "gopher://127.0.0.1:6379/_INFO",
    "ftp://public.test/", "dict://127.0.0.1:11211/", "http://127.0.0.1:22/",
    "http://127.0.0.1:6379/", "http://127.0.0.1:5432/", "https://127.0.0.1:443/",
    "http://internal.test/", "http://metadata.test/", "http://mixed.test/",
    "http://v6private.test/", "http://mapped.test/", "http://cgnat.test/",
    "http://169.254.169.254.nip.io/", "http://nxdomain.test/", "http:///no-host",
    "http://" + "a" * 300 + ".test/", "javascript:alert(1)",
]  # fmt: skip


class ConnectGuard:
    """An audit hook: connections to anything but the allowed loopback ports are refused."""

    def __init__(self) -> None:
        self.active = False
        self.allowed_ports: set[int] = set()
        self.blocked: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if event != "socket.connect" or not self.active:
            return
        address = args[1]
        if not isinstance(address, tuple) or len(address) < 2:
            return  # unix sockets
        host, port = str(address[0]), int(address[1])
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return
        if ip.is_loopback and port in self.allowed_ports:
            return
        with self.lock:
            self.blocked.append((host, port))
        raise PermissionError(f"test audit hook: connection to {host}:{port} refused")


GUARD = ConnectGuard()
sys.addaudithook(GUARD)  # cannot be removed; inert while GUARD.active is False


def stub_resolver(host: str, port: int) -> list[str]:
    try:
        return NAMES[host.rstrip(".").lower()]
    except KeyError:
        raise OSError(f"stub resolver: {host} does not exist") from None


@pytest.fixture
def app_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    from conveyor.api.app import create_app
    from conveyor.settings import Settings

    monkeypatch.delenv("CONVEYOR_CALLBACK_ALLOW", raising=False)
    monkeypatch.setattr(ssrf, "system_resolver", stub_resolver)
    store_url = f"sqlite:///{tmp_path / 'conveyor.db'}"
    settings = Settings(home=tmp_path, store=store_url, imports="tests.swissai.gate_kind")
    store = open_store(store_url)
    store.register_kinds([KindInfo(name="noop")])
    store.close()
    with serve_in_thread(create_app(settings)) as url:
        GUARD.allowed_ports = {int(url.rsplit(":", 1)[1])}
        GUARD.blocked.clear()
        GUARD.active = True
        try:
            yield url, store_url
        finally:
            GUARD.active = False


def swissai_task(callback_url: str) -> dict[str, Any]:
    return {"s3_access_key_id": "k", "s3_secret_access_key": "s", "s3_region": "eu",
            "s3_host": f"https://{PUBLIC}", "s3_bucket": "b", "callback_url": callback_url,
            "task": {"id": "0" * 32, "data_in": ["a.txt"], "status": "pending",
                     "service_id": "svc"}}  # fmt: skip


def test_every_unsafe_url_is_refused_at_submit(app_url: tuple[str, str]) -> None:
    url, _ = app_url
    assert len(REFUSED) >= 40
    with pytest.raises(PermissionError):  # the hook really refuses (to a loopback port no one owns)
        socket.create_connection(("127.0.0.1", 1), timeout=1)
    assert GUARD.blocked == [("127.0.0.1", 1)]
    GUARD.blocked.clear()
    failures: list[str] = []
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/swissai/test.gate/status").status_code == 200
        for target in REFUSED:
            r = http.post("/v1/jobs", json={"kind": "noop", "webhook": {"url": target}})
            if r.status_code != 422 or not r.headers["content-type"].startswith(
                "application/problem+json"
            ):
                failures.append(f"webhook {target[:60]}: {r.status_code} {r.text[:120]}")
            s = http.post("/swissai/test.gate/compute", json=swissai_task(target))
            if s.status_code != 422:
                failures.append(f"swissai callback {target[:60]}: {s.status_code} {s.text[:120]}")
        # the control: a public name is accepted (nothing is delivered: no dispatcher runs)
        ok = http.post(
            "/v1/jobs", json={"kind": "noop", "webhook": {"url": "https://public.test/h"}}
        )
        assert ok.status_code == 201, ok.text
        jobs = http.get("/v1/jobs", params={"limit": 200}).json()["jobs"]
    if len(jobs) != 1:
        failures.append(f"{len(jobs)} jobs exist; only the control should")
    blocked = list(GUARD.blocked)
    notes = (
        f"{len(REFUSED)} URLs x (POST /v1/jobs webhook, Swiss AI callback_url) -> 422; "
        f"stub resolver; audit hook saw {len(blocked)} connects to blocked addresses"
    )
    record("S16 SSRF at submit", 2 * len(REFUSED), len(failures) + len(blocked), notes)
    assert not failures, "\n".join(failures)
    assert blocked == []


def _deliver(store_url: str, until: Callable[[], bool]) -> None:
    store = open_store(store_url)
    fast = WebhookSettings(backoff_s=0.05, backoff_max_s=0.1, poll_s=0.05, lease_s=2,
                           timeout_s=5, horizon_s=0.3)  # fmt: skip
    dispatcher = Dispatcher(store, fast, CallbackPolicy.from_env())
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            dispatcher.step()
            if until():
                return
            dispatcher.wake.wait(0.02)  # a bounded wait between polls, not a sync sleep
        raise AssertionError("deliveries did not settle")
    finally:
        dispatcher.close()
        store.close()


def test_rebinding_and_redirects_are_refused_at_delivery(app_url: tuple[str, str]) -> None:
    url, store_url = app_url

    async def redirect(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        location = b"http://169.254.169.254/latest/meta-data/"
        await send({"type": "http.response.start", "status": 302,
                    "headers": [(b"location", location)]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"x" * 100_000})

    with serve_in_thread(redirect) as hook_base, httpx.Client(base_url=url, timeout=30) as http:
        hook_port = int(hook_base.rsplit(":", 1)[1])
        NAMES["rebind.test"] = [PUBLIC]
        NAMES["hooks.test"] = ["127.0.0.1"]
        rebind = http.post("/v1/jobs", json={"kind": "noop", "webhook": {
            "url": "http://rebind.test/h", "events": ["job.queued"]}})  # fmt: skip
        assert rebind.status_code == 201, rebind.text
        NAMES["rebind.test"] = ["127.0.0.1"]  # the attacker's DNS now answers loopback
        # the redirecting receiver is reachable by name: the operator allows that one name
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CONVEYOR_CALLBACK_ALLOW", "hooks.test")
            redirected = http.post("/v1/jobs", json={"kind": "noop", "webhook": {
                "url": f"http://hooks.test:{hook_port}/h", "events": ["job.queued"]}})  # fmt: skip
            assert redirected.status_code == 201, redirected.text
            GUARD.allowed_ports.add(hook_port)
            ids = [rebind.json()["id"], redirected.json()["id"]]
            store = open_store(store_url)

            def settled() -> bool:
                found = [d for i in ids for d in deliveries_of(store, i)]
                return len(found) == 2 and all(d["status"] != "pending" for d in found)

            try:
                _deliver(store_url, settled)
                rebound = deliveries_of(store, ids[0])[0]
                bounced = deliveries_of(store, ids[1])[0]
            finally:
                store.close()
    failures = []
    if rebound["status"] != "failed" or "loopback" not in rebound["attempts"][0]["error"]:
        failures.append(f"rebinding: {rebound}")
    codes = [a.get("status_code") for a in bounced["attempts"]]
    if bounced["status"] != "failed" or set(codes) != {302}:
        failures.append(f"redirect: {bounced['status']} {codes}")
    blocked = list(GUARD.blocked)
    record("S16 SSRF at delivery", 2, len(failures) + len(blocked),
           f"DNS rebinding (public at submit, loopback at delivery) refused; 302 to "
           f"169.254.169.254 not followed ({len(bounced['attempts'])} attempts, each 302); "
           f"audit hook saw {len(blocked)} blocked connects")  # fmt: skip
    assert not failures, failures
    assert blocked == []


def test_public_host_on_a_service_port_is_refused(app_url: tuple[str, str]) -> None:
    url, _ = app_url
    r = httpx.post(f"{url}/v1/jobs", json={"kind": "noop", "webhook": {
        "url": "http://public.test:6379/"}}, timeout=30)  # fmt: skip
    assert r.status_code == 422, r.text
