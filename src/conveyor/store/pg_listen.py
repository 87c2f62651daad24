"""Wake idle workers through PostgreSQL LISTEN/NOTIFY.

Writers run `pg_notify(CHANNEL, queue)` in the transaction that makes work available, so the
notification is delivered exactly when that work becomes visible. One background thread per
store holds a dedicated connection that LISTENs; waiters block on a condition the thread
signals. If the connection drops, the thread reconnects with backoff and wakes everyone (a
notification may have been missed); waiters also time out and re-check, so a lost wake-up only
costs latency, never a job.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence

import psycopg

CHANNEL = "conveyor_work"
POLL_S = 0.25  # how often the listener thread checks whether it should stop
MAX_BACKOFF_S = 5.0

log = logging.getLogger(__name__)


class Listener:
    """A LISTEN connection shared by every waiter of one store."""

    def __init__(self, conninfo: str, connect_kwargs: dict[str, object]) -> None:
        self._conninfo = conninfo
        self._kwargs = connect_kwargs
        self._cond = threading.Condition()
        self._generation = 0
        self._queues: dict[str, int] = {}  # queue -> generation of its last notification
        self._listening = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[object] | None = None

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Return when work may be available in `queues`, or after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        self._ensure_started(timeout)
        wanted = set(queues)
        with self._cond:
            start = self._generation
            self._cond.wait_for(
                lambda: self._closed.is_set() or self._woken(start, wanted),
                max(0.0, deadline - time.monotonic()),
            )

    def _woken(self, start: int, wanted: set[str]) -> bool:
        # A generation bump with an empty payload ("*") wakes everyone (reconnects).
        return any(self._queues.get(q, -1) > start for q in (*wanted, "*"))

    def _ensure_started(self, timeout: float) -> None:
        if self._thread is None:
            with self._cond:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="conveyor-pg-listen", daemon=True
                    )
                    self._thread.start()
        # The first wait blocks until LISTEN is in place, so work enqueued right after it
        # returns is never missed; later waits do not depend on the connection being up.
        self._listening.wait(timeout)

    def _run(self) -> None:
        backoff = 0.1
        while not self._closed.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, **self._kwargs) as conn:  # type: ignore[arg-type]
                    self._conn = conn
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    self._bump("*")  # anything sent while we were not listening
                    backoff = 0.1
                    while not self._closed.is_set():
                        for note in conn.notifies(timeout=POLL_S):
                            self._bump(note.payload or "*")
            except psycopg.Error as exc:
                if self._closed.is_set():
                    return
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, backoff)
                self._bump("*")
                self._closed.wait(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
            finally:
                self._conn = None

    def _bump(self, queue: str) -> None:
        with self._cond:
            self._generation += 1
            self._queues[queue] = self._generation
            self._cond.notify_all()

    def close(self) -> None:
        self._closed.set()
        with self._cond:
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            conn = self._conn
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.cancel_safe(timeout=1.0)
            thread.join(timeout=POLL_S + 2)
