"""The use cases: submit, get, list, cancel, retry, delete, files. Used by the API, CLI and UI.

Submitting validates input against the kind's JSON Schema as registered in the store, so any
process can accept jobs for kinds it never imported.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import fastjsonschema
from jsonschema.validators import validator_for

from conveyor import errors
from conveyor.ids import uuid7
from conveyor.limits import resolve_key
from conveyor.models import (
    NOT_STARTED_STATES,
    Job,
    JobEvent,
    JobFilter,
    JobPage,
    KindInfo,
    NewJob,
    QueueStats,
)
from conveyor.serving import Watch
from conveyor.storage import BlobInfo, BlobStorage, check_name, job_key, job_prefix
from conveyor.store.base import IDEMPOTENCY_WINDOW_S, JobSpec, Store
from conveyor.telemetry import tracing
from conveyor.webhooks.config import validate_webhook

KINDS_TTL_S = 2.0
MAX_BATCH = 1000


class Service:
    """Job operations over a store and blob storage."""

    def __init__(
        self,
        store: Store,
        storage: BlobStorage,
        *,
        idempotency_window_s: float = IDEMPOTENCY_WINDOW_S,
    ) -> None:
        self.store = store
        self.storage = storage
        self.idempotency_window_s = idempotency_window_s
        self._kinds: dict[str, KindInfo] = {}
        self._kinds_at = 0.0
        self.serving = Watch(store.workers)  # warns of jobs no live worker can run
        self._validators: dict[str, SchemaCheck] = {}

    # -- kinds --------------------------------------------------------------------------------

    def kinds(self, refresh: bool = False) -> dict[str, KindInfo]:
        if refresh or time.monotonic() - self._kinds_at > KINDS_TTL_S:
            self._kinds = {k.name: k for k in self.store.kinds()}
            self._kinds_at = time.monotonic()
        return self._kinds

    def kind(self, name: str) -> KindInfo:
        kinds = self.kinds()
        if name not in kinds:
            kinds = self.kinds(refresh=True)
        if name not in kinds:
            known = ", ".join(sorted(kinds)) or "none yet: start a worker to register kinds"
            raise errors.KindNotFoundError(
                f"unknown kind {name!r}; known kinds: {known}", kind=name
            )
        return kinds[name]

    def validate(self, kind: KindInfo, value: Any) -> None:
        """Raise `InvalidInputError` listing every field that breaks the kind's input schema."""
        if not kind.input_schema:
            return
        cached = self._validators.get(kind.name)
        if cached is None or cached.schema != kind.input_schema:
            cached = self._validators[kind.name] = SchemaCheck(kind.input_schema)
        problems = cached.problems(value)
        if problems:
            fields = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems)
            raise errors.InvalidInputError(
                f"input for {kind.name!r} is invalid: {fields}", errors=problems
            )

    # -- submit ---------------------------------------------------------------------------------

    def submit(self, job: NewJob) -> Job:
        """Validate and enqueue one job; it is durable when this returns."""
        return self.submit_many([job])[0]

    def submit_many(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Validate and enqueue up to 1,000 jobs atomically (all or none)."""
        if tracing.ENABLED:
            from conveyor.telemetry import spans

            return spans.submit(jobs, lambda stamped: self.store.enqueue(self.prepare(stamped)))
        return self.store.enqueue(self.prepare(jobs))

    def prepare(self, jobs: Sequence[NewJob]) -> list[JobSpec]:
        """Validate jobs and resolve the kinds' defaults: specs ready to enqueue."""
        if len(jobs) > MAX_BATCH:
            raise errors.InvalidInputError(f"at most {MAX_BATCH} jobs per batch, got {len(jobs)}")
        now = self.store.now()
        specs = []
        for index, new in enumerate(jobs):
            kind = self.kind(new.kind)
            try:
                self.validate(kind, new.input)
            except errors.InvalidInputError as exc:
                if len(jobs) > 1:
                    for problem in exc.details.get("errors", []):
                        problem["loc"] = ["jobs", index, *problem["loc"]]
                raise
            specs.append(self.spec(new, kind, now))
        return specs

    def spec(self, new: NewJob, kind: KindInfo, now: float) -> JobSpec:
        """The spec `new` becomes with `kind`'s defaults (its input already validated)."""
        run_at = new.run_at.timestamp() if new.run_at else now + (new.delay_s or 0.0)
        return JobSpec(
            id=uuid7(int(now * 1000)),
            kind=new.kind,
            queue=new.queue or kind.queue,
            input=new.input,
            run_at=run_at,
            priority=new.priority,
            max_attempts=new.max_attempts or kind.max_attempts,
            timeout_s=new.timeout_s if new.timeout_s is not None else kind.timeout_s,
            backoff_s=new.backoff_s if new.backoff_s is not None else kind.backoff_s,
            tags=tuple(new.tags),
            idempotency_key=new.idempotency_key,
            request_hash=request_hash(new) if new.idempotency_key else None,
            idempotency_window_s=self.idempotency_window_s,
            # An unsafe URL is refused here (SSRF guard) and re-checked at every delivery.
            webhook=None if new.webhook is None else validate_webhook(new.webhook),
            concurrency_key=resolve_key(kind.concurrency_key, new.input, new.tags),
            unique_key=new.unique_key,
            unique_scope=new.unique_scope,
            unique_window_s=new.unique_window_s,
        )

    # -- reading and changing jobs -------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        return self.store.get(job_id)

    def list_jobs(self, filter: JobFilter, cursor: str | None = None, limit: int = 50) -> JobPage:
        return self.store.list_jobs(filter, cursor, max(1, min(limit, 1000)))

    def events(self, job_id: str, after: int = 0) -> list[JobEvent]:
        self.store.get(job_id)  # 404 for unknown jobs rather than an empty log
        return self.store.events(job_id, after)

    def cancel(self, job_id: str) -> Job:
        return self.store.cancel(job_id)

    def retry(self, job_id: str) -> Job:
        return self.store.retry(job_id)

    def delete(self, job_id: str) -> None:
        """Delete a finished job with its files."""
        self.store.delete(job_id)
        self.storage.delete_prefix(job_prefix(job_id))

    def prune(self, older_than_s: float) -> int:
        """Delete jobs (and files) that finished more than `older_than_s` ago."""
        total = 0
        while ids := self.store.prune(self.store.now() - older_than_s):
            for job_id in ids:
                self.storage.delete_prefix(job_prefix(job_id))
            total += len(ids)
        return total

    def queues(self) -> list[QueueStats]:
        return self.store.queue_stats()

    # -- files ------------------------------------------------------------------------------------

    def files(self, job_id: str) -> list[dict[str, Any]]:
        self.store.get(job_id)
        return [
            {"name": b.name, "direction": b.key.split("/")[2], "size": b.size}
            for b in self.storage.list(job_prefix(job_id))
        ]

    def upload(
        self, job_id: str, name: str, chunks: Iterable[bytes], max_bytes: int | None = None
    ) -> BlobInfo:
        """Attach an input file to a job that has not started yet."""
        job = self.store.get(job_id)
        if job.state not in NOT_STARTED_STATES:
            raise errors.InvalidStateError(
                f"job {job_id} is {job.state.value}; input files can only be added before it runs"
            )
        key = job_key(job_id, "in", check_name(name))
        self.storage.write(key, chunks, max_bytes)
        return self.storage.stat(key)

    def download(
        self, job_id: str, name: str, direction: str = "out", start: int = 0, end: int | None = None
    ) -> tuple[BlobInfo, Iterator[bytes]]:
        self.store.get(job_id)
        key = job_key(job_id, "in" if direction == "in" else "out", name)
        info = self.storage.stat(key)
        return info, self.storage.read(key, start, end)


class SchemaCheck:
    """A compiled JSON Schema: a fast yes/no check, then every problem when the answer is no."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._full = validator_for(schema)(schema)
        try:
            self._fast: Callable[[Any], Any] | None = fastjsonschema.compile(
                schema,
                use_default=False,  # validate only: never rewrite the caller's input
            )
        except fastjsonschema.JsonSchemaDefinitionException:
            self._fast = None  # a schema the fast compiler cannot handle: full check only

    def problems(self, value: Any) -> list[dict[str, Any]]:
        if self._fast is not None:
            try:
                self._fast(value)
                return []
            except fastjsonschema.JsonSchemaValueException:
                pass
        return [
            {"loc": ["input", *e.absolute_path], "msg": e.message, "type": e.validator}
            for e in self._full.iter_errors(value)
        ]


def request_hash(job: NewJob) -> str:
    """A fingerprint of what was asked, to tell a retry from a different request."""
    body = job.model_dump(mode="json", exclude={"idempotency_key"})
    # A retried request is the same request in another trace: its traceparent tag is not asked.
    body["tags"] = [tag for tag in body["tags"] if not tag.startswith(tracing.TAG)]
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
