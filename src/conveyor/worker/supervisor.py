"""The worker supervisor: claims jobs, feeds child processes, holds and renews their leases.

One loop, no threads on the job path (helper threads turn the store's wake-ups into a pipe the
loop can wait on, write settlements, and kill children whose leases lapsed while the loop was
stuck in a store call: `fence.py`). Each pass: reap dead children, claim to fill free
slots, wait for messages, settle finished jobs in one batch, renew leases, enforce
timeouts, cancels and drains, and sweep expired leases of other workers.

Claims are for free slots only (capacity.py): a `process` kind's jobs for idle children (plus,
for kinds known to take microseconds, a small buffer to pipeline), a concurrent kind's for the
room its children have. A claimed job is sent to its child at once and starts there, so its
`running` state and `started_at` (set by the claim) are honest, and no job waits in a busy
child while another could run it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import Any, Literal

import orjson

from conveyor import errors
from conveyor.ids import uuid7
from conveyor.kinds.registry import KindSpec, import_kinds
from conveyor.models import RUNNING_LISTED, JobError, Progress, WorkerInfo, utcnow
from conveyor.settings import Settings
from conveyor.storage import job_prefix, open_storage
from conveyor.store.base import Beat, BeatStatus, Settlement, Store, jobs_by_id
from conveyor.store.rules import Outcome
from conveyor.telemetry import tracing
from conveyor.telemetry.logs import job_fields
from conveyor.telemetry.worker import WORKER_ENV
from conveyor.worker import continuation
from conveyor.worker.capacity import Capacity
from conveyor.worker.child import SHORT_JOB_S
from conveyor.worker.deadlines import Deadlines
from conveyor.worker.fence import FenceWatchdog
from conveyor.worker.settler import Settler
from conveyor.worker.slot import InFlight, KillReason, Slot
from conveyor.workflows.gate import Gate

log = logging.getLogger("conveyor.worker")

PRUNE_EVERY_S = 600.0
STORE_RETRY_S = 0.5
# Claimed jobs waiting in the supervisor for a free child, so also the largest claim. One claim
# is one Redis script (~20 µs per job) that every other client of that Redis waits behind,
# jobs' own calls included: 200 cost 15-20 % of drain speed in the peer bench, against 100;
# SQLite and PostgreSQL drain the same with either.
BUFFER_MAX = 100
BUFFER_AHEAD_S = 0.05  # ...sized to this much work at the recent completion rate
PIPELINE_AHEAD_S = 0.01  # ...and never more than this much work queued per child
RATE_WINDOW_S = 0.25
COLD_S = 1.0  # a concurrent kind found missing is claimed on its own again after this
CLAIM_MAX = 500  # concurrent jobs claimed at once (a Redis claim blocks that Redis meanwhile)
# Progress and log lines are written between heartbeats at most every PROGRESS_S, and less
# often when many jobs run: about PROGRESS_WRITES_S job updates a second in all.
PROGRESS_S = 0.25
PROGRESS_WRITES_S = 4000
PROCESS = "process"  # the group of `process` kinds, claimed together
WORKER_COMMANDS = "worker_commands"  # records keyed by worker id: {"command": "drain", ...}


def default_queues(specs: Sequence[KindSpec]) -> list[str]:
    """What a worker started without `-q` serves: the queues its kinds run in (a kge kind
    declared with `queue="kge"` is served without the newcomer knowing the queue's name)."""
    return sorted({spec.queue for spec in specs}) or ["default"]


class Supervisor:
    """Runs `concurrency` child processes serving `queues` from `store`, with at most `slots`
    jobs in flight."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        burst: bool = False,
        prefetch: int = 32,
        slots: int | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.concurrency = concurrency or settings.concurrency
        self.burst = burst
        self.prefetch = max(1, prefetch)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid7()[-8:]}"
        self.storage = open_storage(settings.storage_url)
        # Claim only kinds the children can run: a queue may carry kinds of other workers.
        specs = list(import_kinds(settings.import_list))
        self.kinds = [spec.name for spec in specs]
        self.queues = list(queues or settings.queue_list or default_queues(specs))
        self.capacity = Capacity(specs, self.concurrency, slots or settings.slots)
        self.hungry_kinds = dict.fromkeys(self.capacity.concurrent_kinds, True)
        # Concurrent kinds whose own claim last found none, and when: claimed on their own again
        # only after COLD_S (or once a claim over every kind brings one). A claim by kind is
        # cheap while those kinds are all that waits, but a scan (Redis: a look at each job)
        # while other kinds fill the queue: once per wake-up it cost the no-op drain 99 %.
        self.cold: dict[str, float] = {}
        self.deadlines = Deadlines()
        self.waiting: list[InFlight] = []  # claimed concurrent jobs not yet placed (rarely any)
        self.dirty: dict[str, InFlight] = {}  # jobs with progress or logs not yet written
        self.last_progress = 0.0
        self.slots = [
            Slot(i, settings.import_list, settings.storage_url) for i in range(self.concurrency)
        ]
        self.buffer: list[InFlight] = []
        self.completions: deque[float] = deque()  # process jobs' finish times, RATE_WINDOW_S
        self.runtime: dict[str, float] = {}  # kind -> EWMA seconds, decides pipelining
        self.draining = False
        self.drain_deadline: float | None = None
        self.hungry = True
        self.started_at = utcnow()
        self.last_beat = self.last_sweep = self.last_prune = self.last_worker_beat = 0.0
        self.stats = {"succeeded": 0, "failed": 0, "cancelled": 0, "released": 0, "lost": 0,
                      "wait": 0}  # fmt: skip
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._closing = threading.Event()
        self._retry_claim = False
        # Burst mode ends once the last claim of each group of kinds (`process` kinds, each
        # concurrent kind) found none, and nothing is left running.
        groups = [PROCESS] if self.process_kinds else []
        self._drained = dict.fromkeys([*groups, *self.capacity.concurrent_kinds], False)
        self._last_reap = 0.0
        self.settler = Settler(store, self._committed)
        self.spawns = continuation.SpawnResolver(store, [spec.info() for spec in specs])
        self.gate = Gate(store, self.settler.add)  # workflow steps: run, skip, or fail at claim
        self.fence = FenceWatchdog(self.slots, settings.lease_s, settings.heartbeat_s)
        tracing.configure()

    # -- lifecycle ------------------------------------------------------------------------------

    def run(self, on_ready: Callable[[], None] | None = None) -> dict[str, int]:
        """Serve until drained (SIGTERM/SIGINT, `stop()`, or an empty queue with `burst`)."""
        os.environ[WORKER_ENV] = self.id  # children inherit it: their logs and spans name us
        for slot in self.slots:
            slot.start()
        self._beat_worker("running")
        threading.Thread(target=self._wake_loop, daemon=True, name="store-waker").start()
        self.fence.start()
        log.info(
            "worker %s serving %s with %d processes, %d slots", self.id, ",".join(self.queues),
            self.concurrency, self.capacity.slots,
        )  # fmt: skip
        if on_ready:
            on_ready()
        try:
            while not self._finished():
                self._tick()
        finally:
            self._closing.set()
            self.fence.close()
            self._shutdown()
        return self.stats

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT drain gracefully; a second one stops at once."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.draining:
            log.warning("second signal: stopping now, releasing in-flight jobs")
            self.drain_deadline = time.monotonic()
        else:
            log.info("signal %s: draining (grace %.0fs)", signal.Signals(signum).name,
                     self.settings.grace_s)  # fmt: skip
            self.stop()
        self._poke()

    def stop(self, grace_s: float | None = None) -> None:
        """Begin a drain: claim nothing more, let running jobs finish within the grace period."""
        if self.draining:
            return
        self.draining = True
        grace = self.settings.grace_s if grace_s is None else grace_s
        self.drain_deadline = time.monotonic() + grace
        for item in [*self.buffer, *self.waiting]:
            self.settler.add(Settlement(item.id, item.token, Outcome.RELEASED))
        self.buffer.clear()
        self.waiting.clear()
        for slot in self.slots:
            slot.control("stop")
        self._poke()

    def _finished(self) -> bool:
        if self.draining:
            return not any(s.process for s in self.slots) and self.settler.idle
        settled = self.settler.idle  # first: a commit flags `_retry_claim` before it is idle
        if not self.burst or self._retry_claim or not all(self._drained.values()):
            return False
        busy = self.buffer or self.waiting or any(s.busy for s in self.slots)
        return settled and not busy

    def _shutdown(self) -> None:
        for slot in self.slots:
            if slot.process is not None:
                slot.process.kill()
                self._on_child_exit(slot, restart=False)
        self.settler.close()
        self._beat_worker("stopped")
        os.close(self._wake_r)
        os.close(self._wake_w)
        log.info("worker %s stopped: %s", self.id, self.stats)

    # -- the loop -------------------------------------------------------------------------------

    def _tick(self) -> None:
        now = time.monotonic()
        # Running children are fenced by the watchdog thread; claimed jobs still waiting
        # here for a child must not start once their leases may have lapsed either.
        if self.buffer and self.fence.lapsed(self.buffer[0], now):
            self._drop_lapsed(now)
        self._reap(now)
        if not self.draining:
            self._fill(now)
        ready = wait(self._waitables(), timeout=self._timeout(now))
        now = time.monotonic()
        for obj in ready:
            if obj == self._wake_r:
                self._drain_wake()
            elif isinstance(obj, Connection):
                self._read(obj, now)
            else:
                for slot in self.slots:
                    if slot.process is not None and slot.process.sentinel == obj:
                        slot.sentinel_ready = True
        self._heartbeat(now)
        self._enforce(now)
        self._sweep(now)

    def _waitables(self) -> list[Any]:
        items: list[Any] = [self._wake_r]
        for slot in self.slots:
            if slot.conn is not None:
                items.append(slot.conn)
            if slot.process is not None:
                items.append(slot.process.sentinel)
        return items

    def _timeout(self, now: float) -> float:
        if not self.draining and self._want_claim():
            return 0.0
        due = [self.last_beat + self.settings.heartbeat_s]
        if self.dirty:
            due.append(self.last_progress + self._progress_every())
        deadline = self.deadlines.next()
        if deadline is not None:
            due.append(deadline)
        for slot in self.slots:
            due.extend(t for t in (slot.kill_at, slot.sigkill_at) if t is not None)
            running = slot.running()
            if running is not None and running.job.timeout_s:
                due.append(slot.running_since + running.job.timeout_s)
        if self.drain_deadline is not None:
            due.append(self.drain_deadline)
        return max(0.0, min(min(due) - now, 1.0))

    # -- claiming and dispatch ----------------------------------------------------------------

    def _ready_slots(self) -> list[Slot]:
        return [s for s in self.slots if s.alive and s.kill_reason is None]

    def _want_claim(self) -> bool:
        if self.hungry and self._capacity() > 0:
            return True
        ready = self._ready_slots()
        return any(
            hungry and self._warm(kind) and self.capacity.room(kind, ready) > 0
            for kind, hungry in self.hungry_kinds.items()
        )

    def _capacity(self) -> int:
        """How many more `process` jobs to claim: idle children plus a buffer sized to the
        recent rate (the buffer only for kinds known to be short: see `_fill`)."""
        if not self.process_kinds:
            return 0
        idle = sum(1 for s in self._ready_slots() if not s.busy)
        ahead = min(BUFFER_MAX, int(self._rate() * BUFFER_AHEAD_S))
        if self.buffer and len(self.buffer) > ahead // 2:
            return 0  # enough in hand; claim again when it runs low, in one batch
        return max(0, idle + ahead - len(self.buffer))

    def _rate(self) -> float:
        """`process` jobs finished per second over the last RATE_WINDOW_S."""
        horizon = time.monotonic() - RATE_WINDOW_S
        while self.completions and self.completions[0] < horizon:
            self.completions.popleft()
        return len(self.completions) / RATE_WINDOW_S

    def _fill(self, now: float) -> None:
        if not self._probe():
            self._claim_process()
            self._claim_concurrent()
        self._dispatch(now)

    def _claim_process(self) -> None:
        """Claim `process` kinds' jobs for the idle children, plus the pipeline buffer."""
        want = self._capacity()
        if want <= 0 or not self.hungry:
            return
        # Jobs beyond the idle children wait for a busy one: only kinds known to take
        # microseconds may (see _may_pipeline), so those extra claims name only them.
        idle = sum(1 for s in self._ready_slots() if not s.busy)
        short = [k for k in self.process_kinds if self._runtime(k) < SHORT_JOB_S]
        extra = want - max(0, idle - len(self.buffer))
        if extra > 0 and len(short) < len(self.process_kinds):
            plan = [(self.process_kinds, want - extra), (short, extra)]
        else:
            plan = [(self.process_kinds, want)]
        full, claimed = True, False
        for kinds, count in plan:
            if count <= 0 or not kinds:
                continue
            got = self._claim(kinds, count)
            if got is None:
                return
            self.buffer.extend(got)
            claimed = claimed or bool(got)
            full = full and len(got) == count
        self.hungry = full
        self._drained[PROCESS] = not claimed

    def _claim_concurrent(self) -> None:
        """Claim each concurrent kind's jobs for the room its children have."""
        ready = self._ready_slots()
        for kind, hungry in self.hungry_kinds.items():
            if not self._warm(kind):
                continue
            room = self.capacity.room(kind, ready) - sum(
                1 for i in self.waiting if i.job.kind == kind
            )
            if not hungry or room <= 0:
                continue
            count = min(room, CLAIM_MAX)
            got = self._claim([kind], count)
            if got is None:
                return
            for item in got:
                item.concurrent = True
            self.waiting.extend(got)
            self.hungry_kinds[kind] = len(got) == count
            if got:
                self.cold.pop(kind, None)
            else:
                self.cold[kind] = time.monotonic()
            self._drained[kind] = not got

    def _probe(self) -> bool:
        """After a wake-up with idle children, one claim over every kind (as many jobs as
        idle children, which any kind fits), instead of one per group of kinds: an idle
        worker makes one store call per wake-up. True if that found the queues drained."""
        if not (self.hungry and self.hungry_kinds):
            return False
        ready = self._ready_slots()
        idle = sum(1 for s in ready if not s.busy) - len(self.buffer) - len(self.waiting)
        if idle <= 0 or not all(self.capacity.room(k, ready) >= idle for k in self.hungry_kinds):
            return False
        got = self._claim(self.kinds, idle)
        if got is None:
            return True
        for item in got:
            if self.capacity.is_concurrent(item.job.kind):
                item.concurrent = True
                self.waiting.append(item)
                self.cold.pop(item.job.kind, None)
            else:
                self.buffer.append(item)
        if len(got) == idle:
            return False  # there may be more: claim per group now
        self.hungry = False
        self.hungry_kinds = dict.fromkeys(self.hungry_kinds, False)
        self._drained = dict.fromkeys(self._drained, True)  # nothing left of any kind
        return True

    def _warm(self, kind: str) -> bool:
        """Whether to claim a concurrent kind on its own now (see `cold`)."""
        since = self.cold.get(kind)
        return since is None or time.monotonic() - since >= COLD_S

    @property
    def process_kinds(self) -> list[str]:
        return self.capacity.process_kinds

    def _claim(self, kinds: list[str], count: int) -> list[InFlight] | None:
        sent_at = time.monotonic()
        claimed = self._store_call(
            self.store.claim, self.queues, self.id, count, self.settings.lease_s, kinds=kinds
        )
        if claimed and any(job.continuation is not None for job in claimed):
            self._store_call(continuation.load_children, self.store, claimed)
        if claimed is None:
            return None
        if tracing.ENABLED and claimed:
            from conveyor.telemetry import spans

            spans.claimed(claimed, self.id, sent_at)
        claimed = self.gate.admit(claimed)
        return [InFlight(job, job.lease.token, sent_at) for job in claimed if job.lease]

    def _dispatch(self, now: float) -> None:
        if self.waiting:
            self._place_concurrent(now)
        if self.buffer:
            ready = [s for s in self._ready_slots() if not s.concurrent]
            while self.buffer and ready:
                slot = min(ready, key=lambda s: len(s.jobs))
                item = self.buffer[0]
                if slot.jobs and not self._may_pipeline(slot, item):
                    break
                self._send(slot, self.buffer.pop(0))
        for slot in self.slots:
            slot.flush()

    def _place_concurrent(self, now: float) -> None:
        ready = self._ready_slots()
        left = []
        for item in self.waiting:
            slot = self.capacity.place(item.job.kind, ready)
            if slot is None:
                left.append(item)
                continue
            item.dispatched_at = now
            self._send(slot, item)
            self.capacity.in_flight += 1
            if item.job.timeout_s:
                self.deadlines.add(now + self._kill_after(item), item, "timeout")
        self.waiting = left

    def _kill_after(self, item: InFlight) -> float:
        """How long after its start a concurrent job with a timeout may run: its child cancels
        it at the timeout, the supervisor kills the child a grace period later."""
        return (item.job.timeout_s or 0.0) + self.settings.cancel_grace_s

    def _send(self, slot: Slot, item: InFlight) -> None:
        item.slot = slot.index
        slot.dispatch(item)

    def _may_pipeline(self, slot: Slot, item: InFlight) -> bool:
        """Queue a job behind a busy child only when it and the child's first job are known to
        be short (every job queued behind that one was, when it was queued), so a long job never
        holds others back while another child could run them; and only up to `prefetch` jobs
        or PIPELINE_AHEAD_S of work."""
        slowest = max(self._runtime(item.job.kind), self._runtime(slot.jobs[0].job.kind))
        depth = min(self.prefetch, int(PIPELINE_AHEAD_S / max(slowest, 1e-6)))
        return slowest < SHORT_JOB_S and len(slot.jobs) < depth

    def _runtime(self, kind: str) -> float:
        """A kind's recent run time (EWMA, as the children measure it); unknown kinds count as
        long until they have run once."""
        return self.runtime.get(kind, 1.0)

    def _wake_loop(self) -> None:
        while not self._closing.is_set():
            try:
                self.store.wait_for_work(self.queues, 0.5)
            except Exception:
                time.sleep(STORE_RETRY_S)
            self._poke()

    def _poke(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"w")

    def _drain_wake(self) -> None:
        if self._retry_claim:
            self._retry_claim = False
            self._drained = dict.fromkeys(self._drained, False)
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 4096):
                pass
        self.hungry = True
        for kind in self.hungry_kinds:
            self.hungry_kinds[kind] = True

    # -- messages from children -----------------------------------------------------------------

    def _read(self, conn: Connection, now: float) -> None:
        slot = next((s for s in self.slots if s.conn is conn), None)
        if slot is None:
            return
        try:
            while conn.poll():
                self._handle(slot, orjson.loads(conn.recv_bytes()))
        except (EOFError, OSError):
            pass  # the child died; its sentinel tells us next pass
        self._dispatch(now)  # refill what finished, in one write per child

    def _handle(self, slot: Slot, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "done":
            finished = []
            for done in message["jobs"]:
                item = self._pop(slot, done["id"])
                if item is None or item.lost:
                    continue
                took = done.get("took")  # none for jobs handed back unstarted
                if took is not None:
                    kind = item.job.kind
                    self.runtime[kind] = 0.8 * self.runtime.get(kind, took) + 0.2 * took
                finished.append((item, done))
            self._write_updates([item for item, _ in finished])
            for item, done in finished:
                self._settle_done(item, done)
        elif op == "updates":
            for update in message["progress"]:
                self._update(slot, update)
            for update in message["logs"]:
                self._update(slot, update)
        else:
            self._update(slot, message)

    def _update(self, slot: Slot, message: dict[str, Any]) -> None:
        """A progress or log message of a job the child runs."""
        job_id = message["id"]
        item = slot.concurrent.get(job_id) or next((i for i in slot.jobs if i.id == job_id), None)
        if item is None:
            return
        if message["op"] == "progress":
            item.progress = Progress(
                current=message["current"], total=message["total"], message=message["message"]
            )
        else:
            item.logs.append(message["line"])
        self.dirty[job_id] = item

    def _pop(self, slot: Slot, job_id: str) -> InFlight | None:
        item = slot.pop(job_id)
        if item is not None and item.concurrent:
            self.capacity.in_flight -= 1
        return item

    def _write_updates(self, items: Sequence[InFlight]) -> None:
        """Write finished jobs' last progress and log lines, in one call, before their final
        states."""
        pending = [item for item in items if item.progress is not None or item.logs]
        if pending:
            self._beat(pending)

    def _settle_done(self, item: InFlight, message: dict[str, Any]) -> None:
        outcome = Outcome(message["outcome"])
        if outcome is Outcome.WAIT:  # the handler spawned children (continuation.py)
            self._settle(item, outcome, wait=self.spawns.settlement(item.id, item.token, message))
            return
        error = JobError(**message["error"]) if message.get("error") else None
        if error is not None:
            log.warning("job %s (%s) failed: %s: %s", item.id, item.job.kind, error.type,
                        error.message, extra=job_fields(item.job, self.id))  # fmt: skip
        self._settle(item, outcome, result=message.get("result"), error=error,
                     retry=message.get("retry", True))  # fmt: skip

    def _settle(
        self,
        item: InFlight,
        outcome: Outcome,
        *,
        result: Any = None,
        error: JobError | None = None,
        retry: bool = True,
        wait: Settlement | None = None,
    ) -> None:
        item.done = True
        self.dirty.pop(item.id, None)
        if not item.concurrent:
            self.completions.append(time.monotonic())
        settlement = wait or Settlement(item.id, item.token, outcome, result, error, retry)
        self.settler.add(settlement)
        self.stats[settlement.outcome.value] = self.stats.get(settlement.outcome.value, 0) + 1

    def _committed(self) -> None:
        """Called by the settler after each commit (its thread): a retry with no backoff may
        be due at once, so look at the queue again before deciding it is empty."""
        self._retry_claim = True
        self._poke()

    # -- leases -----------------------------------------------------------------------------------

    def _all_items(self) -> list[InFlight]:
        return [
            *self.buffer,
            *self.waiting,
            *(item for slot in self.slots for item in slot.items()),
        ]

    def _progress_every(self) -> float:
        return max(PROGRESS_S, self.capacity.in_flight / PROGRESS_WRITES_S)

    def _heartbeat(self, now: float) -> None:
        """Renew every lease each `heartbeat_s`; between, write progress and log lines of the
        jobs that have some (see PROGRESS_S)."""
        if now - self.last_beat >= self.settings.heartbeat_s:
            self.last_beat = now
            items = self._all_items()
        elif self.dirty and now - self.last_progress >= self._progress_every():
            items = list(self.dirty.values())
        else:
            return
        self.last_progress = now
        self.dirty = {}
        sent_at = time.monotonic()
        statuses = self._beat(items)
        if statuses is not None:
            for item in items:
                if statuses.get(item.id) in (BeatStatus.OK, BeatStatus.CANCEL):
                    item.renewed_at = sent_at  # the store extended it no earlier than this
            self._apply_statuses(statuses, now)
        # Progress beats come often; the worker record and operator commands have their own
        # clock so frequent progress can never starve them.
        if now - self.last_worker_beat >= self.settings.heartbeat_s:
            self.last_worker_beat = now
            self._beat_worker("draining" if self.draining else "running")
            self._check_commands()

    def _check_commands(self) -> None:
        """Operators ask a worker to drain with a record (the dashboard's drain button)."""
        if self.draining:
            return
        command = self._store_call(self.store.get_record, WORKER_COMMANDS, self.id)
        if command and command.get("command") == "drain":
            log.info("drain requested by %s", command.get("by", "an operator"))
            self._store_call(self.store.delete_record, WORKER_COMMANDS, self.id)
            self.stop()

    def _beat(self, items: Sequence[InFlight]) -> dict[str, BeatStatus] | None:
        beats = []
        for item in items:
            beats.append(Beat(item.id, item.token, item.progress, tuple(item.logs)))
            item.progress, item.logs = None, []
        if not beats:
            return {}
        statuses: dict[str, BeatStatus] | None = self._store_call(
            self.store.heartbeat, beats, self.settings.lease_s
        )
        return statuses

    def _apply_statuses(self, statuses: dict[str, BeatStatus], now: float) -> None:
        odd = {job_id: st for job_id, st in statuses.items() if st is not BeatStatus.OK}
        if not odd:
            return
        for held in (self.buffer, self.waiting):
            for item in list(held):
                status = odd.get(item.id)
                if status is BeatStatus.LOST:
                    held.remove(item)
                elif status is BeatStatus.CANCEL:
                    held.remove(item)
                    self._settle(item, Outcome.CANCELLED)
        # The child skips a job it is told to cancel before starting it, and cancels a running
        # concurrent job's task; `_enforce` stops a running `process` job (or one that starts
        # meanwhile), and the deadlines a concurrent job that ignores the cancel.
        grace = self.settings.cancel_grace_s
        for slot in self.slots:
            found = (slot.concurrent.get(job_id) for job_id in odd)
            items = [i for i in found if i is not None] + [i for i in slot.jobs if i.id in odd]
            for item in items:
                status = odd[item.id]
                if status is BeatStatus.CANCEL and not item.cancel:
                    item.cancel = True
                    log.info("job %s: cancel requested", item.id,
                             extra=job_fields(item.job, self.id))  # fmt: skip
                    slot.control("cancel", id=item.id, seq=item.seq)
                    if item.concurrent:
                        self.deadlines.add(now + grace, item, "cancel")
                elif status is BeatStatus.LOST and not item.lost:
                    item.lost = True
                    log.warning("job %s: lease lost (rescued elsewhere); stopping it", item.id,
                                extra=job_fields(item.job, self.id))  # fmt: skip
                    slot.control("cancel", id=item.id, seq=item.seq)
                    if item.concurrent:
                        self.deadlines.add(now + grace, item, "lost")

    def _drop_lapsed(self, now: float) -> None:
        """Forget claimed jobs not yet started whose leases may have lapsed: others may own
        them now (the store rescues them when the lease expires)."""
        keep = [item for item in self.buffer if not self.fence.lapsed(item, now)]
        log.error("%d claimed jobs' leases not renewed in time (store unreachable?); dropping "
                  "them", len(self.buffer) - len(keep))  # fmt: skip
        self.buffer = keep

    # -- deadlines, children, sweeping ------------------------------------------------------

    def _enforce(self, now: float) -> None:
        for slot in self.slots:
            running = slot.running()
            if running is not None and slot.kill_reason is None:
                timeout = running.job.timeout_s
                if running.lost:
                    slot.kill("lost", now)
                elif running.cancel:
                    slot.kill("cancel", now, delay=self.settings.cancel_grace_s, item=running)
                elif timeout and now - slot.running_since > timeout:
                    log.warning("job %s: timed out after %.1fs; killing it", running.id, timeout,
                                extra=job_fields(running.job, self.id))  # fmt: skip
                    slot.kill("timeout", now, item=running)
            drained = self.drain_deadline is not None and now >= self.drain_deadline
            if drained and slot.process is not None and slot.kill_reason is None:
                slot.kill("drain", now)
        for item, reason in self.deadlines.due(now):
            self._stop_concurrent(item, reason, now)
        for slot in self.slots:
            slot.enforce(now)

    def _stop_concurrent(self, item: InFlight, reason: KillReason, now: float) -> None:
        """A concurrent job is still running a grace period after it was told to stop: kill
        its child. Its other started jobs are retried as new attempts (`_on_child_exit`)."""
        slot = self.slots[item.slot]
        if slot.concurrent.get(item.id) is not item or slot.kill_reason is not None:
            return
        if reason == "timeout":
            # Its timeout runs from its start, which a child still booting puts off.
            started = slot.started_at(item)
            due = None if started is None else started + self._kill_after(item)
            if due is None or due > now:
                self.deadlines.add(due or now + self._kill_after(item), item, reason)
                return
        what = {"timeout": "its timeout", "cancel": "a cancel", "lost": "its lost lease"}
        log.warning(
            "job %s (%s) ignored %s for %.1fs; killing its process (%d other jobs there will "
            "be retried)", item.id, item.job.kind, what.get(reason, reason),
            self.settings.cancel_grace_s, slot.busy - 1,
        )  # fmt: skip
        slot.kill(reason, now, item=item)

    def _reap(self, now: float) -> None:
        # A dead child's sentinel wakes the loop; waitpid is only asked then, or once a second.
        check_all = now - self._last_reap >= 1.0
        if check_all:
            self._last_reap = now
        for slot in self.slots:
            suspect = check_all or slot.sentinel_ready
            if slot.process is not None and suspect and not slot.process.is_alive():
                self._on_child_exit(slot, restart=not self.draining)
            elif slot.process is None and not self.draining and now >= slot.restart_at:
                slot.start()

    def _on_child_exit(self, slot: Slot, restart: bool) -> None:
        reason, target = slot.kill_reason, slot.kill_item
        code = slot.process.exitcode if slot.process is not None else None
        fenced, started = slot.fenced, slot.started_seq
        held = slot.reap()
        self.capacity.in_flight -= sum(1 for item in held if item.concurrent)
        outcomes = []
        for item in held:
            outcome = _exit_outcome(item, started, reason, item is target, fenced)
            if outcome is Outcome.LOST and reason is None:
                log.warning("job %s: worker process died (exit %s); will retry", item.id, code,
                            extra=job_fields(item.job, self.id))  # fmt: skip
                self._traced_kill(item, "worker_lost", slot)
            elif outcome is Outcome.FAILED:
                self._traced_kill(item, "timeout", slot)
            if outcome is not None:
                outcomes.append((item, outcome))
        self._write_updates([item for item, _ in outcomes])
        for item, outcome in outcomes:
            error = _timeout_error(item) if outcome is Outcome.FAILED else None
            self._settle(item, outcome, error=error)
        if restart:
            slot.restart_at = time.monotonic() + slot.restart_delay()

    def _traced_kill(self, item: InFlight, reason: str, slot: Slot) -> None:
        if tracing.ENABLED:
            from conveyor.telemetry import spans

            spans.attempt_killed(item.job, reason, slot.running_since, self.id)

    def _sweep(self, now: float) -> None:
        if now - self.last_sweep < self.settings.sweep_s:
            return
        self.last_sweep = now
        rescued = self._store_call(self.store.rescue)
        if rescued:
            log.warning("rescued %d jobs whose worker's lease expired", len(rescued))
            if tracing.ENABLED:
                from conveyor.telemetry import spans

                found = self._store_call(jobs_by_id, self.store, rescued)
                spans.rescued(list((found or {}).values()), self.id)
        if now - self.last_prune >= PRUNE_EVERY_S and self.settings.retention_s > 0:
            self.last_prune = now
            pruned = self._store_call(
                self.store.prune, self.store.now() - self.settings.retention_s
            )
            for job_id in pruned or []:
                self.storage.delete_prefix(job_prefix(job_id))

    def _beat_worker(self, state: Literal["running", "draining", "stopped"]) -> None:
        info = WorkerInfo(
            id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queues,
            kinds=self.kinds,
            concurrency=self.concurrency,
            running=self._running_ids(RUNNING_LISTED),
            busy=sum(1 for s in self.slots if s.running() is not None) + self.capacity.in_flight,
            slots=self.capacity.usage(self.slots),
            state=state,
            started_at=self.started_at,
            last_seen=utcnow(),
        )
        self._store_call(self.store.worker_beat, info)

    def _running_ids(self, limit: int) -> list[str]:
        """Jobs running in the children, the first `limit` (a concurrent job counts from when
        it is sent: it starts as soon as its child has it)."""
        ids = [job.id for slot in self.slots if (job := slot.running()) is not None]
        for slot in self.slots:
            ids.extend(itertools.islice(slot.concurrent, max(0, limit - len(ids))))
        return ids[:limit]

    def _store_call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the store; on an outage log it and return None (the loop retries later)."""
        try:
            return fn(*args, **kwargs)
        except errors.StoreUnavailableError as exc:
            log.warning("store unavailable (%s); retrying", exc)
            time.sleep(STORE_RETRY_S)
            return None


def _exit_outcome(
    item: InFlight, started: int, reason: KillReason | None, targeted: bool, fenced: bool
) -> Outcome | None:
    """What becomes of a job whose child exited: `started` is the last job it had started,
    `reason` why the supervisor killed it (None: it crashed), `targeted` whether the kill was
    for this job. None: leave the job alone (its lease is someone else's, or lapsed)."""
    if item.lost:
        return None  # someone else holds its lease now
    if item.seq > started:
        return Outcome.RELEASED  # never started
    if targeted and reason == "timeout":
        return Outcome.FAILED
    if item.cancel:
        return Outcome.CANCELLED
    if item.concurrent:
        if fenced:
            return None  # its lease lapsed with the others: the store rescues it
        # It ran beside the job the kill was for, or in a child that crashed: retried as a new
        # attempt (a drain hands it back unused).
        return Outcome.RELEASED if reason == "drain" else Outcome.LOST
    if item.seq < started:
        return Outcome.LOST  # it ran, but its outcome was still held back in the child
    if reason == "drain":
        return Outcome.RELEASED
    return None if reason == "lost" else Outcome.LOST


def _timeout_error(item: InFlight) -> JobError:
    return JobError(
        type="Timeout",
        message=f"the job ran longer than its timeout of {item.job.timeout_s}s and was killed",
        reason="timeout",
    )
