"""The SSRF guard for URLs that clients choose: webhooks, Swiss AI callbacks, S3 endpoints, and
the SPARQL endpoints `kge.import` reads.

A client-chosen URL must not make the server talk to itself or its private network. The guard
refuses non-http(s) schemes, credentials in URLs, and any host that resolves to an address that
is not globally routable: loopback, private (10/8, 172.16/12, 192.168/16), link-local and cloud
metadata (169.254/16, fe80::/10), CGNAT (100.64/10), unique-local (fc00::/7), multicast,
reserved and unspecified addresses, including IPv4 hidden inside IPv6 (IPv4-mapped, NAT64,
6to4, Teredo) and numeric spellings such as `2130706433`, `0177.0.0.1` or `0x7f.1`.

Operators allow exceptions with `CONVEYOR_CALLBACK_ALLOW`: comma-separated CIDRs (`10.0.0.0/8`)
and host names (`hooks.internal`, or `.internal` for a whole domain).

A URL is checked when it is registered and again right before each connection: the name is
resolved once, every address is checked, and the connection goes to the checked address (the
`Host` header and TLS server name keep the original name), so DNS rebinding cannot swap in a
private address between the check and the connect.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from conveyor import errors

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]
"""(host, port) → the addresses it resolves to, as strings."""

NAT64 = ipaddress.ip_network("64:ff9b::/96")
NUMERIC_V4 = re.compile(r"^[0-9a-fA-FxX.]+$")


DEFAULT_PORTS = (80, 443, 8080, 8443)


class UnsafeURLError(errors.InvalidInputError):
    """The URL is not allowed as a callback target."""

    type = "unsafe-url"
    status = 422


class GuardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    callback_allow: str = Field(
        "",
        description="Comma-separated CIDRs and host names that client-chosen URLs (webhooks,"
        " callbacks, S3 and SPARQL endpoints) may reach anyway.",
    )
    callback_ports: str = Field(
        ",".join(map(str, DEFAULT_PORTS)),
        description="Ports client-chosen URLs may use on public hosts (allowed hosts may use any).",
    )


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL and the addresses it may be connected to."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"

    def pinned_url(self) -> str:
        """The URL with its host replaced by the first checked address."""
        parts = urlsplit(self.url)
        address = self.addresses[0]
        netloc = f"[{address}]" if ":" in address else address
        netloc = f"{netloc}:{self.port}"
        rest = parts.path or "/"
        if parts.query:
            rest += "?" + parts.query
        return f"{self.scheme}://{netloc}{rest}"


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]
        if address not in seen:
            seen.append(address)
    return seen


class CallbackPolicy:
    """Decides which URLs outgoing requests may go to."""

    def __init__(
        self,
        allow: Iterable[str] = (),
        resolver: Resolver | None = None,
        ports: Iterable[int] = DEFAULT_PORTS,
    ) -> None:
        self.ports = frozenset(ports)
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.names: set[str] = set()
        self.suffixes: list[str] = []
        for item in (a.strip().lower() for a in allow):
            if not item:
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
                continue
            except ValueError:
                pass
            if item.startswith("."):
                self.suffixes.append(item)
            else:
                self.names.add(item.rstrip("."))
        self.resolver: Resolver = resolver or system_resolver

    @classmethod
    def from_env(cls, resolver: Resolver | None = None) -> CallbackPolicy:
        """The policy `CONVEYOR_CALLBACK_ALLOW` describes."""
        settings = GuardSettings()
        try:
            ports = [int(p) for p in settings.callback_ports.split(",") if p.strip()]
        except ValueError:
            raise errors.ConfigurationError(
                f"CONVEYOR_CALLBACK_PORTS must be comma-separated port numbers, got"
                f" {settings.callback_ports!r}"
            ) from None
        return cls(settings.callback_allow.split(","), resolver, ports)

    def check(self, url: str, *, what: str = "callback URL") -> Target:
        """Parse, resolve and check `url`; raise `UnsafeURLError` saying why it is refused."""
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise UnsafeURLError(f"the {what} {url!r} is not a valid URL: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise UnsafeURLError(f"the {what} must use http or https, not {scheme or 'nothing'!r}")
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise UnsafeURLError(f"the {what} must not carry credentials (user:password@)")
        host = (parts.hostname or "").rstrip(".").lower()
        if not host:
            raise UnsafeURLError(f"the {what} {url!r} has no host")
        port = port or (443 if scheme == "https" else 80)
        literal = _literal_address(host)
        if literal is not None:
            addresses = [literal]
        else:
            try:
                addresses = [ipaddress.ip_address(a) for a in self.resolver(host, port)]
            except (OSError, UnicodeError, ValueError) as exc:
                raise UnsafeURLError(f"the {what} host {host!r} does not resolve: {exc}") from None
            if not addresses:
                raise UnsafeURLError(f"the {what} host {host!r} does not resolve")
        allowed_name = self._name_allowed(host)
        if not allowed_name:
            for address in addresses:
                reason = self.refusal(address)
                if reason is not None:
                    raise UnsafeURLError(
                        f"the {what} host {host!r} resolves to {address}, {reason}; allow it"
                        " with CONVEYOR_CALLBACK_ALLOW if it is meant to be reached",
                        host=host,
                        address=str(address),
                    )
        if not allowed_name:
            self._check_port(port, addresses, what, host)
        return Target(
            url=url.strip(),
            scheme=scheme,
            host=host,
            port=port,
            addresses=tuple(str(a) for a in addresses),
        )

    def _check_port(self, port: int, addresses: Sequence[IPAddress], what: str, host: str) -> None:
        """Public hosts only on web ports: a callback must not poke Redis, SSH or a database
        that happens to listen on a public address."""
        if port in self.ports:
            return
        if all(any(a in net for net in self.networks) for a in addresses):
            return  # the operator allowed these addresses explicitly
        raise UnsafeURLError(
            f"the {what} uses port {port}, which callbacks may not use (allowed:"
            f" {', '.join(map(str, sorted(self.ports)))}); set CONVEYOR_CALLBACK_PORTS"
            " or allow the host with CONVEYOR_CALLBACK_ALLOW",
            host=host,
            port=port,
        )

    def _name_allowed(self, host: str) -> bool:
        return host in self.names or any(host.endswith(s) for s in self.suffixes)

    def refusal(self, address: IPAddress) -> str | None:
        """Why this address may not be reached, or None if it may."""
        if any(address in net for net in self.networks):
            return None
        inner = _embedded_ipv4(address)
        if inner is not None:
            if any(inner in net for net in self.networks):
                return None
            why = _classify(inner)
            return None if why is None else f"an IPv6 form of {inner} ({why})"
        return _classify(address)


def _literal_address(host: str) -> IPAddress | None:
    """The address a numeric host means, in any spelling inet_aton accepts (`0x7f.1`...)."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    if NUMERIC_V4.match(host) and any(c.isdigit() for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def _classify(address: IPAddress) -> str | None:
    checks = (
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local (cloud metadata) address"),
        ("is_private", "a private address"),
        ("is_multicast", "a multicast address"),
        ("is_unspecified", "the unspecified address"),
        ("is_reserved", "a reserved address"),
    )
    for attribute, reason in checks:
        if getattr(address, attribute):
            return reason
    if isinstance(address, ipaddress.IPv4Address) and address in ipaddress.ip_network(
        "100.64.0.0/10"
    ):
        return "a carrier-grade NAT address"
    if not address.is_global:
        return "not a public address"
    return None
