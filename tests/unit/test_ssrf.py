"""The SSRF guard: private, loopback, metadata and disguised addresses are refused."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from conveyor.webhooks.sender import Sender
from conveyor.webhooks.ssrf import CallbackPolicy, UnsafeURLError


def stub(table: dict[str, Sequence[str]]):  # a resolver that never touches the network
    def resolve(host: str, port: int) -> Sequence[str]:
        if host not in table:
            raise OSError(f"no such host {host}")
        return table[host]

    return resolve


DNS = stub(
    {
        "public.example": ["93.184.215.14"],
        "evil.example": ["127.0.0.1"],
        "meta.example": ["169.254.169.254"],
        "mixed.example": ["93.184.215.14", "10.0.0.1"],
        "v6loop.example": ["::1"],
        "internal.corp": ["10.1.2.3"],
        "hooks.internal": ["192.168.1.5"],
        "localhost": ["127.0.0.1", "::1"],
    }
)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://127.1.2.3:8080/",
        "http://localhost./",
        "http://[::1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.0.1/",
        "http://100.64.0.1/",  # carrier-grade NAT
        "http://[fd00::1]/",  # unique-local
        "http://[fe80::1]/",  # link-local
        "http://[fd00:ec2::254]/",  # AWS IPv6 metadata
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
        "http://[::ffff:169.254.169.254]/",
        "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
        "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
        "http://2130706433/",  # decimal 127.0.0.1
        "http://0177.0.0.1/",  # octal
        "http://0x7f.1/",  # hex shorthand
        "http://017700000001/",  # octal, whole
        "http://0/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://224.0.0.1/",
        "http://evil.example/",  # a name resolving to loopback
        "http://meta.example/",
        "http://mixed.example/",  # one bad address is enough
        "http://v6loop.example/",
    ],
)
def test_refused(url: str) -> None:
    with pytest.raises(UnsafeURLError) as caught:
        CallbackPolicy(resolver=DNS).check(url)
    assert caught.value.status == 422
    assert "resolves to" in str(caught.value)  # refused for its address, not a lookup error


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "http or https"),
        ("gopher://public.example/", "http or https"),
        ("ftp://public.example/", "http or https"),
        ("http://user:pw@public.example/", "credentials"),
        ("http://user@public.example/", "credentials"),
        ("http:///nohost", "no host"),
        ("http://public.example:99999/", "not a valid URL"),
        ("http://nxdomain.example/", "does not resolve"),
    ],
)
def test_refused_with_reason(url: str, reason: str) -> None:
    with pytest.raises(UnsafeURLError, match=reason):
        CallbackPolicy(resolver=DNS).check(url)


def test_public_address_is_allowed_and_pinned() -> None:
    target = CallbackPolicy(resolver=DNS).check("https://public.example/hook?x=1")
    assert target.addresses == ("93.184.215.14",)
    assert target.pinned_url() == "https://93.184.215.14:443/hook?x=1"
    assert target.host_header == "public.example"


def test_operator_allow_list() -> None:
    policy = CallbackPolicy(["10.0.0.0/8", "hooks.internal", ".corp", "::1/128"], resolver=DNS)
    assert policy.check("http://10.0.0.1/").addresses == ("10.0.0.1",)
    assert policy.check("http://internal.corp/").host == "internal.corp"
    assert policy.check("http://hooks.internal:8080/x").host_header == "hooks.internal:8080"
    assert policy.check("http://[::1]:9/").addresses == ("::1",)
    with pytest.raises(UnsafeURLError):
        policy.check("http://127.0.0.1/")  # loopback was not allowed
    with pytest.raises(UnsafeURLError):
        policy.check("http://192.168.0.1/")


def test_policy_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_CALLBACK_ALLOW", "127.0.0.0/8, localhost")
    policy = CallbackPolicy.from_env()
    assert policy.check("http://127.0.0.1:1/").addresses == ("127.0.0.1",)
    monkeypatch.delenv("CONVEYOR_CALLBACK_ALLOW")
    with pytest.raises(UnsafeURLError):
        CallbackPolicy.from_env().check("http://127.0.0.1:1/")


def test_rebinding_is_defeated_by_connecting_to_the_checked_address() -> None:
    """The name resolves to a public address at the check and to loopback afterwards."""
    answers = iter([["93.184.215.14"], ["127.0.0.1"]])
    policy = CallbackPolicy(resolver=lambda host, port: next(answers))
    target = policy.check("http://rebind.example/")
    assert target.pinned_url().startswith("http://93.184.215.14:80/")
    with pytest.raises(UnsafeURLError):
        policy.check("http://rebind.example/")  # the re-check at connect time sees loopback


def test_sender_refuses_and_never_follows_redirects() -> None:
    """A real loopback server redirecting to the metadata address: the redirect is not taken."""
    from tests.servers.http import serve_in_thread

    async def app(scope, receive, send):  # minimal ASGI app: always redirect
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 302,
                    "headers": [(b"location", b"http://169.254.169.254/latest/")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"go away"})

    with serve_in_thread(app) as base:
        allowed = Sender(CallbackPolicy(["127.0.0.0/8"]), timeout_s=5, max_bytes=3)
        outcome = allowed.send("POST", base + "/hook", {}, b"{}")
        assert outcome.status_code == 302  # recorded as a failed attempt, not followed
        assert not outcome.ok
        assert outcome.body == b"go "  # capped read
        guarded = Sender(CallbackPolicy(), timeout_s=5, max_bytes=100)
        refused = guarded.send("POST", base + "/hook", {}, b"{}")
        assert refused.status_code is None
        assert refused.error is not None and "loopback" in refused.error
        for sender in (allowed, guarded):
            sender.close()


def test_public_hosts_only_on_web_ports_unless_configured() -> None:
    for port in (22, 5432, 6379):
        with pytest.raises(UnsafeURLError, match="port"):
            CallbackPolicy(resolver=DNS).check(f"http://public.example:{port}/hook")
    assert CallbackPolicy(resolver=DNS).check("http://public.example:8080/").port == 8080
    custom = CallbackPolicy(resolver=DNS, ports=[9000])
    assert custom.check("http://public.example:9000/").port == 9000
    with pytest.raises(UnsafeURLError):
        custom.check("https://public.example/")
