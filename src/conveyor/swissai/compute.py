"""The `swissai.compute` kind: one Swiss AI Center task around any declared kind.

fetching (each `data_in` key from the caller's bucket, with the caller's credentials, its MIME
type — guessed from the key's extension, as the originals do — checked against the field) →
processing (the declared kind's handler, reading `ctx.input_file(field)` and writing
`ctx.output_file(field)`) → saving (each output, its type the one the handler chose with
`swissai.output_type` or else sniffed, checked against the field, uploaded as
`<uuid4><ext>`). The job's result is `{"data_out": [...keys]}`; the callback to the engine is
sent by the webhook dispatcher from the job's final event, so it is retried, never lost.

Bad input (wrong type, missing object, refused credentials) fails the task at once with a
message; S3 outages are retried like any failed attempt.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import tempfile
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from conveyor import errors
from conveyor.kinds.registry import KindSpec, registry, task
from conveyor.storage import job_key
from conveyor.storage.base import MissingFileError
from conveyor.storage.fs import FileStorage
from conveyor.swissai.declare import SwissAIService, declared
from conveyor.swissai.models import FieldDescription, TaskStatus
from conveyor.swissai.outputs import chosen
from conveyor.swissai.sealing import unseal
from conveyor.webhooks.ssrf import CallbackPolicy
from conveyor.worker.context import Context, PermanentError

KIND = "swissai.compute"
STEPS = {TaskStatus.FETCHING: 0, TaskStatus.PROCESSING: 1, TaskStatus.SAVING: 2}
EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "text/plain": ".txt",
              "text/csv": ".csv", "application/json": ".json", "application/pdf": ".pdf",
              "application/zip": ".zip", "audio/mpeg": ".mp3", "audio/ogg": ".ogg"}  # fmt: skip
MAGIC = [(b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
         (b"%PDF-", "application/pdf"), (b"PK\x03\x04", "application/zip"),
         (b"OggS", "audio/ogg"), (b"ID3", "audio/mpeg"), (b"\xff\xfb", "audio/mpeg")]  # fmt: skip
MAX_SNIFF_TEXT = 64 << 20


class S3Location(BaseModel):
    host: str
    region: str
    bucket: str
    credentials: str = Field(description="Sealed with the server key; never in clear.")


class ComputeInput(BaseModel):
    kind: str
    task_id: str
    service_id: str
    pipeline_execution_id: str | None = None
    data_in: list[str]
    s3: S3Location


@task(KIND, input=ComputeInput, max_attempts=3, retry_backoff=2.0)
def compute(job: ComputeInput, ctx: Context) -> dict[str, Any]:
    """Run one Swiss AI Center task: fetch inputs from S3, run the kind, upload its outputs."""
    service = declared(job.kind)
    if service is None or job.kind not in registry:
        raise PermanentError(
            f"this worker does not know the Swiss AI service {job.kind!r}; add the module that"
            " declares it to CONVEYOR_IMPORTS"
        )
    spec = registry.get(job.kind)
    bucket = caller_storage(job.s3)
    with tempfile.TemporaryDirectory(prefix="conveyor-swissai-") as tmp:
        staging = FileStorage(Path(tmp) / "staging")
        inner = Context(
            job_id=ctx.job_id,
            kind=spec.name,
            attempt=ctx.attempt,
            storage=staging,
            workdir=Path(tmp) / "work",
            send=_forward(ctx),
            is_cancelled=lambda: ctx.cancelled,
        )
        report(ctx, TaskStatus.FETCHING)
        fetch(service, job.data_in, bucket, staging, ctx.job_id)
        report(ctx, TaskStatus.PROCESSING)
        result = run_kind(spec, inner)
        report(ctx, TaskStatus.SAVING)
        keys = save(service, inner, bucket)
    return {"data_out": keys, "result": result}


def report(ctx: Context, status: TaskStatus) -> None:
    """Make the task's status visible (`GET .../tasks/{id}/status` reads the progress)."""
    ctx.progress(STEPS[status], len(STEPS), status.value)
    ctx.flush()
    ctx.log(f"swissai status: {status.value}")


def _forward(ctx: Context) -> Any:
    """The inner context's progress and logs go to the outer job, under `processing`."""

    def send(message: dict[str, Any]) -> None:
        if message.get("op") == "log":
            ctx.log(message.get("line", ""))
        elif message.get("op") == "progress":
            text = message.get("message")
            label = f"processing: {text}" if text else "processing"
            ctx.progress(message.get("current", 0), message.get("total"), label)

    return send


def caller_storage(s3: S3Location) -> Any:
    """The caller's bucket, reached with the caller's credentials through the SSRF guard."""
    from conveyor.storage.s3 import S3Settings, S3Storage

    target = CallbackPolicy.from_env().check(s3.host, what="S3 endpoint")
    # Plain HTTP: connect to the checked address (no second DNS lookup to rebind). HTTPS keeps
    # the name, which its certificate is checked against.
    endpoint = f"http://{target.pinned_url().split('/')[2]}" if target.scheme == "http" else s3.host
    secret = unseal(s3.credentials)
    settings = S3Settings(
        endpoint_url=endpoint,
        region=s3.region,
        access_key_id=secret["access_key_id"],
        secret_access_key=secret["secret_access_key"],
        addressing_style="path",
    )
    return S3Storage(s3.bucket, "", settings=settings)


def check_type(field: FieldDescription, key: str) -> str:
    allowed = [t.value for t in field.type]
    guessed = mimetypes.guess_type(key)[0]
    if guessed not in allowed:
        raise PermanentError(
            f"Wrong file extension for {field.name} ({allowed}): got {guessed} (key {key!r})"
        )
    return guessed


def fetch(
    service: SwissAIService, keys: list[str], bucket: Any, staging: FileStorage, job_id: str
) -> None:
    """Copy each input object into the inner job's input files, streamed."""
    fields = service.data_in_fields
    if len(keys) != len(fields):
        # The engine makes every data_in field a required upload, so its tasks always carry
        # one key per field, in order; anything else is a caller mistake, said plainly.
        raise PermanentError(
            f"got {len(keys)} inputs but {service.slug} takes one per data_in field, in order:"
            f" {[f.name for f in fields]}"
        )
    for field, key in zip(fields, keys, strict=True):
        check_type(field, key)
        try:
            staging.write(job_key(job_id, "in", field.name), bucket.read(key))
        except MissingFileError:
            raise PermanentError(f"input {key!r} is not in the bucket") from None
        except errors.ConfigurationError as exc:
            raise PermanentError(f"cannot read input {key!r}: {exc}") from None


def run_kind(spec: KindSpec, ctx: Context) -> Any:
    try:
        arg: Any = {} if spec.input_model is None else spec.input_model.model_validate({})
    except ValidationError as exc:
        raise PermanentError(
            f"{spec.name} needs input values, but Swiss AI tasks carry only files: {exc}"
        ) from None
    value = asyncio.run(spec.handler(arg, ctx)) if spec.is_async else spec.handler(arg, ctx)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return None
    return value


def sniff(path: Path, allowed: list[str]) -> str | None:
    """The MIME type of an output file: magic numbers, else JSON / CSV / text by content."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    for magic, mime in MAGIC:
        if head.startswith(magic):
            return mime
    if path.stat().st_size > MAX_SNIFF_TEXT:
        return None
    try:
        text = path.read_text("utf-8")
    except UnicodeDecodeError:
        return None
    if "application/json" in allowed:
        try:
            json.loads(text)
            return "application/json"
        except ValueError:
            pass
    for mime in ("text/csv", "text/plain"):
        if mime in allowed:
            return mime
    return "text/plain"


def save(service: SwissAIService, ctx: Context, bucket: Any) -> list[str]:
    keys = []
    for field in service.data_out_fields:
        path = ctx.output_file(field.name)
        allowed = [t.value for t in field.type]
        if not path.is_file():
            raise PermanentError(f"{service.kind} wrote no output {field.name!r}")
        mime = chosen(ctx, field.name) or sniff(path, allowed)
        if mime not in allowed:
            raise PermanentError(f"Wrong output type for {field.name} ({allowed}): got {mime}")
        key = f"{uuid.uuid4()}{EXTENSIONS.get(mime) or mimetypes.guess_extension(mime) or ''}"
        bucket.upload(key, path)
        keys.append(key)
    return keys
