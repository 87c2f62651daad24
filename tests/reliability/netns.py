"""A tiny private network of Linux network namespaces for the many-hosts scenarios (S10).

Topology (names carry this process's pid so parallel runs never collide; the addresses exist
only inside these namespaces, no default route anywhere):

    <p>_w1 10.213.N.2/30 ─veth─ 10.213.N.1/30 <p>_db 10.213.N.5/30 ─veth─ 10.213.N.6/30 <p>_w2
                                                (and 10.213.N.9/30 ─veth─ .10 <p>_w3, … on request)

The test thread enters the store namespace with `setns(2)` (so servers started by the existing
fixtures run there and the test reaches them on that namespace's 127.0.0.1), worker hosts are
started with `ip netns exec`, and `blackhole()` adds a blackhole route on one worker host: a
silent partition (packets vanish, no RST). Everything is deleted on exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

CLONE_NEWNET = 0x40000000


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns failed")


@dataclass(frozen=True)
class Network:
    db: str
    hosts: dict[str, str]  # worker host name -> namespace
    store_addr: dict[str, str]  # worker host name -> the store's address on that host's link

    def exec_prefix(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", self.hosts[host]]

    def blackhole(self, host: str) -> None:
        _ip("-n", self.hosts[host], "route", "add", "blackhole", f"{self.store_addr[host]}/32")

    def heal(self, host: str) -> None:
        _ip("-n", self.hosts[host], "route", "del", "blackhole", f"{self.store_addr[host]}/32")

    @contextlib.contextmanager
    def inside_store(self) -> Iterator[None]:
        """Run the calling thread (and the processes it starts) in the store's namespace."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.db}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(target)
            os.close(own)


@contextlib.contextmanager
def private_network(hosts: int = 2) -> Iterator[Network]:
    """Create the namespaces and links (a store host and `hosts` worker hosts w1, w2, …);
    skip loudly when this machine does not allow it."""
    tag = f"cv{os.getpid() % 100000}"
    subnet = 10 + os.getpid() % 200  # 10.213.<subnet>.0/24, unique enough per run
    db = f"{tag}_db"
    workers = {f"w{i + 1}": f"{tag}_w{i + 1}" for i in range(hosts)}
    made: list[str] = []
    try:
        try:
            for ns in (db, *workers.values()):
                _ip("netns", "add", ns)
                made.append(ns)
                _ip("-n", ns, "link", "set", "lo", "up")
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            pytest.skip(
                "!!! S10/many-hosts SKIPPED: cannot create network namespaces here "
                f"(`ip netns add` failed: {detail.decode(errors='replace').strip() or exc})"
            )
        store_addr = {}
        for index, (host, ns) in enumerate(workers.items()):
            base = 4 * index
            near, far = f"{tag}d{index}", f"{tag}h{index}"
            _ip("link", "add", near, "netns", db, "type", "veth", "peer", "name", far,
                "netns", ns)  # fmt: skip
            _ip("-n", db, "addr", "add", f"10.213.{subnet}.{base + 1}/30", "dev", near)
            _ip("-n", ns, "addr", "add", f"10.213.{subnet}.{base + 2}/30", "dev", far)
            _ip("-n", db, "link", "set", near, "up")
            _ip("-n", ns, "link", "set", far, "up")
            store_addr[host] = f"10.213.{subnet}.{base + 1}"
        yield Network(db=db, hosts=workers, store_addr=store_addr)
    finally:
        for ns in made:  # deleting a namespace deletes its veth ends too
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
