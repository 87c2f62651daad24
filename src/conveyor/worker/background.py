"""Store calls the supervisor's loop makes without waiting for them.

A store round trip can take hundreds of milliseconds (a store in another region, a congested
link). Made on the loop, every claim, lease renewal and sweep would leave each child that
finished meanwhile without its next job. The loop starts them here instead, at most one call
per name at a time (a renewal still in flight is not sent twice), and takes their results
back on its own thread, where all of its state is changed: `collect` runs each finished call's
`then` there, after its thread pokes the loop awake.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundCalls:
    """Named calls on a small thread pool, one in flight per name."""

    def __init__(self, names: int, wake: Callable[[], None]) -> None:
        self._pool = ThreadPoolExecutor(max_workers=names, thread_name_prefix="store-call")
        self._wake = wake
        self._pending: dict[str, tuple[Future[Any], Callable[[Any], None]]] = {}

    def busy(self, name: str) -> bool:
        """A call by this name was started and its result not yet collected."""
        return name in self._pending

    def start(
        self, name: str, call: Callable[[], T], then: Callable[[T], None], *, inline: bool = False
    ) -> bool:
        """Run `call` on a pool thread, then `then(result)` on the thread that `collect`s it;
        with `inline`, both here and now (for a call known to take less than handing it over
        to another thread and back does). False (and nothing started) while the previous call
        by this name is unfinished."""
        if name in self._pending:
            return False
        if inline:
            then(call())
            return True
        future = self._pool.submit(call)
        self._pending[name] = (future, then)
        future.add_done_callback(lambda _: self._wake())
        return True

    def collect(self) -> None:
        """Hand each finished call's result to its `then` (an exception it raised is raised
        here, as if the call had been made on this thread)."""
        for name, (future, then) in list(self._pending.items()):
            if future.done():
                del self._pending[name]
                then(future.result())

    def close(self) -> None:
        """Wait for the calls in flight (a store call ends by its own deadline) and start no
        more; `collect` still hands over their results."""
        self._pool.shutdown(wait=True)
