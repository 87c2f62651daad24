"""Request-header limits on a real `conveyor api`, driven over raw sockets: oversized headers
get 431, headers that never finish (slowloris) get 408 and a closed socket, and ordinary
keep-alive traffic is untouched."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.api.conftest import ApiServer, running_api

HEADER_TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    env = {"CONVEYOR_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S), "CONVEYOR_MAX_HEADER_BYTES": "8192"}
    with running_api(tmp_path_factory.mktemp("limits"), env_extra=env) as server:
        yield server


def connect(server: ApiServer) -> socket.socket:
    parts = urlsplit(server.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    return sock


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_response(sock: socket.socket) -> bytes:
    """One whole response (headers and a Content-Length body) off a kept-alive socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )  # fmt: skip
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_oversized_headers_get_431(limited: ApiServer) -> None:
    with connect(limited) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_headers_that_never_finish_get_408_and_a_closed_socket(limited: ApiServer) -> None:
    with connect(limited) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # ...and nothing more
        answer = read_all(sock)  # returns once the server closes
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert HEADER_TIMEOUT_S - 0.5 <= waited < HEADER_TIMEOUT_S + 10


def test_a_silent_connection_is_closed(limited: ApiServer) -> None:
    with connect(limited) as sock:
        assert read_all(sock).startswith(b"HTTP/1.1 408 ")


def test_slow_but_steady_keep_alive_requests_are_served(limited: ApiServer) -> None:
    """Two requests on one connection, the second after a pause longer than the header timeout
    (idle between requests is the keep-alive timeout's business, not the header timer's)."""
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(limited) as sock:
        sock.sendall(request)
        first = read_response(sock)
        assert first.startswith(b"HTTP/1.1 200 "), first[:200]
        # Idle, as a pooled client connection is: the pause itself is what is under test.
        time.sleep(HEADER_TIMEOUT_S + 0.5)
        sock.sendall(request)
        second = read_response(sock)
        assert second.startswith(b"HTTP/1.1 200 "), second[:200]
