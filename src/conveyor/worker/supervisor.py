"""The worker supervisor: claims jobs, feeds child processes, holds and renews their leases.

One loop, no threads on the job path (helper threads turn the store's wake-ups into a pipe the
loop can wait on, write settlements, and kill children whose leases lapsed while the loop was
stuck in a store call: `fence.py`). Each pass: reap dead children, claim to fill free
capacity, wait for messages, settle finished jobs in one batch, renew leases, enforce
timeouts, cancels and drains, and sweep expired leases of other workers.
"""

from __future__ import annotations

import contextlib
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
from conveyor.models import JobError, Progress, WorkerInfo, utcnow
from conveyor.settings import Settings
from conveyor.storage import job_prefix, open_storage
from conveyor.store.base import Beat, BeatStatus, Settlement, Store, jobs_by_id
from conveyor.store.rules import Outcome
from conveyor.telemetry import tracing
from conveyor.telemetry.logs import job_fields
from conveyor.telemetry.worker import WORKER_ENV
from conveyor.worker import continuation
from conveyor.worker.child import SHORT_JOB_S
from conveyor.worker.fence import FenceWatchdog
from conveyor.worker.settler import Settler
from conveyor.worker.slot import InFlight, Slot
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
WORKER_COMMANDS = "worker_commands"  # records keyed by worker id: {"command": "drain", ...}


def default_queues(specs: Sequence[KindSpec]) -> list[str]:
    """What a worker started without `-q` serves: the queues its kinds run in (a kge kind
    declared with `queue="kge"` is served without the newcomer knowing the queue's name)."""
    return sorted({spec.queue for spec in specs}) or ["default"]


class Supervisor:
    """Runs `concurrency` child processes serving `queues` from `store`."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        burst: bool = False,
        prefetch: int = 32,
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
        self.slots = [
            Slot(i, settings.import_list, settings.storage_url) for i in range(self.concurrency)
        ]
        self.buffer: list[InFlight] = []
        self.completions: deque[float] = deque()  # finish times within RATE_WINDOW_S
        self.runtime: dict[str, float] = {}  # kind -> EWMA seconds, decides pipelining
        self.draining = False
        self.drain_deadline: float | None = None
        self.hungry = True
        self.started_at = utcnow()
        self.last_beat = self.last_sweep = self.last_prune = self.last_worker_beat = 0.0
        self.progress_dirty = False
        self.stats = {"succeeded": 0, "failed": 0, "cancelled": 0, "released": 0, "lost": 0,
                      "wait": 0}  # fmt: skip
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._closing = threading.Event()
        self._retry_claim = False
        self._last_claim_empty = False  # burst mode ends after an empty claim with nothing left
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
            "worker %s serving %s with %d processes", self.id, ",".join(self.queues),
            self.concurrency,
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
        for item in self.buffer:
            self.settler.add(Settlement(item.id, item.token, Outcome.RELEASED))
        self.buffer.clear()
        for slot in self.slots:
            slot.control("stop")
        self._poke()

    def _finished(self) -> bool:
        if self.draining:
            return not any(s.process for s in self.slots) and self.settler.idle
        if not self.burst or not self._last_claim_empty or self._retry_claim:
            return False
        busy = self.buffer or any(s.jobs for s in self.slots) or not self.settler.idle
        return not busy

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
        if self.hungry and self._capacity() > 0 and not self.draining:
            return 0.0
        due = [self.last_beat + self.settings.heartbeat_s]
        if self.progress_dirty:
            due.append(self.last_beat + 0.25)
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

    def _capacity(self) -> int:
        """How many more jobs to claim: idle children plus a buffer sized to the recent rate."""
        idle = sum(1 for s in self._ready_slots() if not s.jobs)
        ahead = min(BUFFER_MAX, int(self._rate() * BUFFER_AHEAD_S))
        if self.buffer and len(self.buffer) > ahead // 2:
            return 0  # enough in hand; claim again when it runs low, in one batch
        return max(0, idle + ahead - len(self.buffer))

    def _rate(self) -> float:
        """Jobs finished per second over the last RATE_WINDOW_S."""
        horizon = time.monotonic() - RATE_WINDOW_S
        while self.completions and self.completions[0] < horizon:
            self.completions.popleft()
        return len(self.completions) / RATE_WINDOW_S

    def _fill(self, now: float) -> None:
        want = self._capacity()
        if want > 0 and self.hungry:
            sent_at = time.monotonic()
            claimed = self._store_call(
                self.store.claim, self.queues, self.id, want, self.settings.lease_s,
                kinds=self.kinds,
            )  # fmt: skip
            if claimed and any(job.continuation is not None for job in claimed):
                self._store_call(continuation.load_children, self.store, claimed)
            if claimed is not None:
                self.hungry = len(claimed) == want
                self._last_claim_empty = not claimed
                if tracing.ENABLED and claimed:
                    from conveyor.telemetry import spans

                    spans.claimed(claimed, self.id, sent_at)
                claimed = self.gate.admit(claimed)
                self.buffer.extend(
                    InFlight(job, job.lease.token, sent_at) for job in claimed if job.lease
                )
        self._dispatch(now)

    def _dispatch(self, now: float) -> None:
        ready = self._ready_slots()
        while self.buffer and ready:
            slot = min(ready, key=lambda s: len(s.jobs))
            item = self.buffer[0]
            if slot.jobs and not self._may_pipeline(slot, item):
                break
            slot.dispatch(self.buffer.pop(0))
        for slot in ready:
            slot.flush()

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
            self._last_claim_empty = False
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 4096):
                pass
        self.hungry = True

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
            for done in message["jobs"]:
                item = slot.pop(done["id"])
                if item is None or item.lost:
                    continue
                took = done.get("took")  # none for jobs handed back unstarted
                if took is not None:
                    kind = item.job.kind
                    self.runtime[kind] = 0.8 * self.runtime.get(kind, took) + 0.2 * took
                self._settle_done(item, done)
            return
        item = next((i for i in slot.jobs if i.id == message.get("id")), None)
        if item is None:
            return
        if op == "progress":
            item.progress = Progress(
                current=message["current"], total=message["total"], message=message["message"]
            )
            self.progress_dirty = True
        elif op == "log":
            item.logs.append(message["line"])
            self.progress_dirty = True

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
        if item.progress is not None or item.logs:
            self._beat([item])  # the last progress and log lines land before the final state
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
        return [*self.buffer, *(item for slot in self.slots for item in slot.jobs)]

    def _heartbeat(self, now: float) -> None:
        due = now - self.last_beat >= self.settings.heartbeat_s
        if not due and not (self.progress_dirty and now - self.last_beat >= 0.25):
            return
        self.last_beat = now
        self.progress_dirty = False
        items = self._all_items()
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
        for item in list(self.buffer):
            status = statuses.get(item.id)
            if status is BeatStatus.LOST:
                self.buffer.remove(item)
            elif status is BeatStatus.CANCEL:
                self.buffer.remove(item)
                self._settle(item, Outcome.CANCELLED)
        # The child skips a job it is told to cancel before starting it; `_enforce` stops the
        # one it is running (or starts meanwhile).
        for slot in self.slots:
            for item in slot.jobs:
                status = statuses.get(item.id)
                if status is BeatStatus.CANCEL and not item.cancel:
                    item.cancel = True
                    log.info("job %s: cancel requested", item.id,
                             extra=job_fields(item.job, self.id))  # fmt: skip
                    slot.control("cancel", id=item.id, seq=item.seq)
                elif status is BeatStatus.LOST and not item.lost:
                    item.lost = True
                    log.warning("job %s: lease lost (rescued elsewhere); stopping it", item.id,
                                extra=job_fields(item.job, self.id))  # fmt: skip
                    slot.control("cancel", id=item.id, seq=item.seq)

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
            slot.enforce(now)

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
        started = slot.started_seq
        for item in slot.reap():
            if item.lost:
                continue  # someone else holds its lease now
            if item.seq > started:
                self._settle(item, Outcome.RELEASED)  # never started
            elif item.seq < started:
                # It ran, but its outcome was still held back in the child: run it again.
                self._settle(item, Outcome.LOST)
            elif reason == "timeout" and item is target:
                self._traced_kill(item, "timeout", slot)
                self._settle(item, Outcome.FAILED, error=_timeout_error(item))
            elif item.cancel:
                self._settle(item, Outcome.CANCELLED)
            elif reason == "drain":
                self._settle(item, Outcome.RELEASED)
            elif reason != "lost":
                log.warning("job %s: worker process died (exit %s); will retry", item.id, code,
                            extra=job_fields(item.job, self.id))  # fmt: skip
                self._traced_kill(item, "worker_lost", slot)
                self._settle(item, Outcome.LOST)
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
            running=[job.id for slot in self.slots if (job := slot.running()) is not None],
            state=state,
            started_at=self.started_at,
            last_seen=utcnow(),
        )
        self._store_call(self.store.worker_beat, info)

    def _store_call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the store; on an outage log it and return None (the loop retries later)."""
        try:
            return fn(*args, **kwargs)
        except errors.StoreUnavailableError as exc:
            log.warning("store unavailable (%s); retrying", exc)
            time.sleep(STORE_RETRY_S)
            return None


def _timeout_error(item: InFlight) -> JobError:
    return JobError(
        type="Timeout",
        message=f"the job ran longer than its timeout of {item.job.timeout_s}s and was killed",
        reason="timeout",
    )
