"""Deadlines of concurrent jobs: when the supervisor kills a child whose job ignored a stop.

A concurrent job's child cancels it itself at its timeout, or when told to cancel it; the
supervisor only steps in, killing the child (and so retrying its other jobs), if the job is
still there a grace period later. One heap for all of them, so a pass of the loop costs
nothing per running job.
"""

from __future__ import annotations

import heapq
import itertools

from conveyor.worker.slot import InFlight, KillReason


class Deadlines:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, InFlight, KillReason]] = []
        self._order = itertools.count()

    def add(self, at: float, item: InFlight, reason: KillReason) -> None:
        heapq.heappush(self._heap, (at, next(self._order), item, reason))

    def next(self) -> float | None:
        """When the earliest deadline falls (some may be for jobs that have ended since)."""
        while self._heap and self._heap[0][2].done:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> list[tuple[InFlight, KillReason]]:
        """Deadlines passed by jobs still running, earliest first."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            _, _, item, reason = heapq.heappop(self._heap)
            if not item.done:
                out.append((item, reason))
        return out
