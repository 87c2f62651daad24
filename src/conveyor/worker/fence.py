"""Self-fencing (reliability plan R3): stop jobs whose leases may belong to another worker now.

A lease holds until `lease_s` after the store last renewed it, and the supervisor renews leases
from its loop. That loop can sit for seconds inside one store call that a silent partition has
stalled (until a TCP or socket timeout fires), so the deadline is watched by a thread of its own.
Each job carries the moment the store call that last renewed its lease was *sent* (monotonic
clock; the store extended the lease no earlier than that), and the child running a job that has
gone `FENCE_AT` of a lease without renewal is killed at once: another worker may be running the
job already, and this worker's result would be refused anyway (settling is fenced by the token).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from conveyor.worker.slot import InFlight, Slot

log = logging.getLogger("conveyor.worker")

FENCE_AT = 0.9  # stop a job this far into a lease not renewed since
POLL_S = 0.1  # how often the watchdog looks (at most; less for very short leases)


class FenceWatchdog:
    """A thread that kills the children of jobs whose leases were not renewed in time."""

    def __init__(self, slots: Sequence[Slot], lease_s: float, heartbeat_s: float) -> None:
        self.margin = lease_s * FENCE_AT
        if heartbeat_s * 3 > lease_s:
            log.warning(
                "heartbeat_s=%g is more than a third of lease_s=%g: one slow or failed heartbeat "
                "can make this worker stop its jobs (it does at %g s without renewal)",
                heartbeat_s, lease_s, self.margin,
            )  # fmt: skip
        self._poll_s = min(POLL_S, (lease_s - self.margin) / 4)
        self._slots = slots
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="fence-watchdog")

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def lapsed(self, item: InFlight, now: float) -> bool:
        """True once `item`'s lease may have expired in the store (or is about to)."""
        return now - item.renewed_at > self.margin

    def check(self, now: float) -> None:
        """Kill every child holding a job whose lease lapsed (safe from any thread)."""
        for slot in self._slots:
            # items(): C-level copies, so the loop thread cannot change them under us.
            stale = next((item for item in slot.items() if self.lapsed(item, now)), None)
            if stale is not None and slot.fence():
                log.error(
                    "job %s: lease not renewed for %.1fs (store unreachable?); killed its "
                    "process, the job will run elsewhere", stale.id, now - stale.renewed_at,
                )  # fmt: skip

    def _run(self) -> None:
        while not self._stop.wait(self._poll_s):
            self.check(time.monotonic())
