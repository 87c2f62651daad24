"""Group commit for finished jobs.

Settling is a durable write (an fsync on SQLite). Done on the supervisor's loop, every commit
would stall the children waiting for their next job; done here, on one background thread,
the loop keeps dispatching while the store syncs, and everything that finished during one
commit goes into the next: the batch grows exactly as much as the store is slow.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from conveyor import errors
from conveyor.store.base import Settlement, Store

log = logging.getLogger("conveyor.worker")

MAX_BATCH = 1000
RETRY_S = 0.5


class Settler:
    def __init__(self, store: Store, on_commit: Callable[[], None]) -> None:
        self._store = store
        self._on_commit = on_commit
        self._queue: list[Settlement] = []
        self._cond = threading.Condition()
        self._busy = False
        self._closing = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="settler")
        self._thread.start()

    def add(self, settlement: Settlement) -> None:
        with self._cond:
            self._queue.append(settlement)
            self._cond.notify()

    @property
    def idle(self) -> bool:
        """Nothing waiting and nothing being written."""
        with self._cond:
            return not self._queue and not self._busy

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued (retrying outages until `timeout`), then stop."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._queue:
            log.error("%d settlements could not be written; those jobs will be rescued",
                      len(self._queue))  # fmt: skip

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                self._busy = True
            try:
                self._write(batch)
                # Before we look idle: a settlement can make work (a retry, a released
                # dependent, a parent whose children ended) that a burst worker must not miss.
                self._on_commit()
            finally:
                with self._cond:
                    self._busy = False

    def _write(self, batch: list[Settlement]) -> None:
        try:
            applied = self._store.settle(batch)
        except errors.StoreUnavailableError as exc:
            log.warning("store unavailable while settling %d jobs (%s); retrying", len(batch), exc)
            time.sleep(RETRY_S)
            with self._cond:
                self._queue[:0] = batch  # stale ones will simply be refused later
            return
        for settlement, ok in zip(batch, applied, strict=True):
            if not ok:
                log.warning("job %s: lease was lost before it finished; its result is dropped",
                            settlement.job_id)  # fmt: skip
