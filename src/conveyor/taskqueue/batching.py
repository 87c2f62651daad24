"""Group commit for Task Queue deletes: concurrent acknowledgements share one transaction.

Every `tasks.delete` of a leased task is a fenced settle, a durable write (an fsync on SQLite),
and the original clients delete one task per request. Deletes that arrive while a commit is
in flight wait and go into the next one together, so throughput grows with concurrency instead
of stopping at the disk's sync rate. Alone, a delete commits at once. Each caller gets its own
answer, after its settlement is committed.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

from conveyor.store.base import Settlement, Store

MAX_BATCH = 1000


class SettleBatcher:
    """`settle(one)` from many threads; the first waiting thread commits for everyone."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cond = threading.Condition()
        self._pending: list[tuple[Settlement, Future[bool]]] = []
        self._busy = False

    def settle(self, settlement: Settlement) -> bool:
        """True if applied, False if the lease token was stale."""
        future: Future[bool] = Future()
        with self._cond:
            self._pending.append((settlement, future))
        while True:
            with self._cond:
                while self._busy and not future.done():
                    self._cond.wait()
                if future.done():
                    return future.result()
                self._busy = True  # this thread leads the next commit
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                self._commit(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _commit(self, batch: list[tuple[Settlement, Future[bool]]]) -> None:
        try:
            applied = self.store.settle([s for s, _ in batch])
        except Exception as exc:  # every caller in the batch gets the store's error
            for _, each in batch:
                each.set_exception(exc)
            return
        for (_, each), ok in zip(batch, applied, strict=True):
            each.set_result(ok)
