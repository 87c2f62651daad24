"""Slots: how many jobs of each kind a worker's children may run, and which child takes a job.

A `process` kind's job needs a child of its own (one slot per child). An async or thread kind's
jobs share a child with others of their kind: up to the kind's `slots` per child (async
kinds default to the worker's `--slots` shared out over its children; thread kinds run as many
as their `threads`), and never more concurrent jobs in the whole worker than `--slots`.

Concurrent jobs are packed: a job goes to the busiest child that still has room for its kind,
so children stay free for `process` jobs until concurrent work needs them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from conveyor.kinds.registry import KindSpec
from conveyor.models import SlotUse
from conveyor.worker.child import thread_pool_size
from conveyor.worker.slot import Slot


class Capacity:
    def __init__(self, specs: Iterable[KindSpec], children: int, slots: int) -> None:
        specs = list(specs)
        self.children = children
        self.slots = slots
        self.runs = {spec.name: spec.runs for spec in specs}
        self.process_kinds = [k for k, runs in self.runs.items() if runs == "process"]
        self.concurrent_kinds = [k for k, runs in self.runs.items() if runs != "process"]
        share = math.ceil(slots / children)
        self.caps: dict[str, int] = {}
        for spec in specs:
            if spec.runs == "async":
                self.caps[spec.name] = min(spec.slots or share, slots)
            elif spec.runs == "thread":
                self.caps[spec.name] = min(thread_pool_size(spec), slots)
        self.in_flight = 0  # concurrent jobs held by children

    def is_concurrent(self, kind: str) -> bool:
        return self.runs.get(kind, "process") != "process"

    def room(self, kind: str, ready: Sequence[Slot]) -> int:
        """How many more jobs of a concurrent kind the ready children can start right now."""
        cap = self.caps[kind]
        free = sum(max(0, slot.room(kind, cap)) for slot in ready)
        return max(0, min(free, self.slots - self.in_flight))

    def place(self, kind: str, ready: Sequence[Slot]) -> Slot | None:
        """The child to start a concurrent job of `kind` on: the busiest with room."""
        if self.in_flight >= self.slots:
            return None
        cap = self.caps[kind]
        best: Slot | None = None
        for slot in ready:
            if slot.room(kind, cap) > 0 and (best is None or slot.busy > best.busy):
                best = slot
        return best

    def usage(self, children: Sequence[Slot]) -> list[SlotUse]:
        """Slots busy and in total per kind, for the worker record."""
        out = []
        for kind, runs in sorted(self.runs.items()):
            if runs == "process":
                busy = sum(1 for s in children if (job := s.running()) and job.job.kind == kind)
                total = self.children
            else:
                busy = sum(s.kind_counts.get(kind, 0) for s in children)
                total = min(self.caps[kind] * self.children, self.slots)
            out.append(SlotUse(kind=kind, runs=runs, busy=busy, total=total))
        return out
