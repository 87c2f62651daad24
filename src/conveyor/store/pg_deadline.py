"""A deadline on every PostgreSQL call: the one failure TCP timeouts cannot see.

libpq waits for an answer as long as the connection looks alive. `tcp_user_timeout` and
keepalives catch a dead server or a cut network, but not a peer that acknowledges every byte
and answers keepalives yet never replies: a hung server, or a stuck middlebox (a proxy whose
upstream vanished) holding a half-open connection. Such a call would block its thread forever
(the S12 fault scenario found a worker stuck for good after a 10 s stall). One watchdog
thread per store shuts down the socket of any call older than the deadline; libpq then fails
the call, the caller gets `StoreUnavailableError` and the pool discards the connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg

CHECK_EVERY_S = 0.5


class CallDeadlines:
    """Tracks the connections in use and breaks those held past `timeout_s`."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._calls: dict[int, tuple[float, psycopg.Connection[Any]]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watch(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        """Break `conn` if the block is still running after the deadline."""
        key = id(conn)
        with self._lock:
            self._calls[key] = (time.monotonic() + self.timeout_s, conn)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, daemon=True, name="pg-call-deadlines"
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._calls.pop(key, None)

    def _run(self) -> None:
        while True:
            time.sleep(CHECK_EVERY_S)
            now = time.monotonic()
            with self._lock:
                late = [conn for deadline, conn in self._calls.values() if deadline < now]
            for conn in late:
                _break(conn)


def _break(conn: psycopg.Connection[Any]) -> None:
    """Shut the connection's socket down under libpq: its pending read fails at once."""
    with contextlib.suppress(OSError, psycopg.Error):
        fd = conn.pgconn.socket
        # A second socket object on a duplicate of the descriptor: shutdown() acts on the
        # connection itself, and closing the duplicate leaves libpq's descriptor alone.
        with socket.socket(fileno=socket.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
