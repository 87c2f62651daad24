"""The `render` and `render.taskqueue` kinds (see the package docstring)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from conveyor.kinds.registry import task
from conveyor.kinds.render.document import render_document
from conveyor.kinds.render.payload import RenderInputError, RenderTask, decode_payload, parse_task
from conveyor.worker.context import Context, PermanentError

#: Like the original daemons: a task whose lease was taken this many times gets a failure result.
RETRY_LIMIT = 5


class RenderOutput(BaseModel):
    """What a render job produced: the PDF is the output file `file`."""

    filename: str = Field(description="The document's name, as the original results give it.")
    file: str = Field(description="Name of the output file holding the PDF.")
    pages: int
    bytes: int
    paper_size: str
    resource_view: str


class TaskQueueTask(BaseModel):
    """A Task Queue task as stored by the v1beta2 layer (only the fields rendering needs)."""

    model_config = ConfigDict(extra="allow")

    payloadBase64: str = Field(description="Base64 of the render task's JSON.")


def _render(task_: RenderTask, ctx: Context) -> RenderOutput:
    ctx.progress(0, 1, f"rendering {task_.resource_view}")
    try:
        document = render_document(task_)
    except RenderInputError as exc:
        raise PermanentError(str(exc)) from None
    ctx.output_file(document.file).write_bytes(document.pdf)
    ctx.progress(1, 1, f"{document.pages} pages")
    return RenderOutput(
        filename=document.filename, file=document.file, pages=document.pages,
        bytes=len(document.pdf), paper_size=task_.paper_size,
        resource_view=task_.resource_view,
    )  # fmt: skip


@task("render", input=RenderTask, output=RenderOutput, queue="render", timeout=300)
def render(task_: RenderTask, ctx: Context) -> RenderOutput:
    """Render a printable resource to PDF."""
    return _render(task_, ctx)


@task(
    "render.taskqueue",
    input=TaskQueueTask,
    output=RenderOutput,
    queue="render",
    max_attempts=RETRY_LIMIT + 1,
    timeout=300,
)
def render_taskqueue(queued: TaskQueueTask, ctx: Context) -> RenderOutput:
    """Render the task#render payload of a Task Queue task (bad payloads fail for good)."""
    try:
        task_ = parse_task(decode_payload(queued.payloadBase64))
    except RenderInputError as exc:
        raise PermanentError(str(exc)) from None
    return _render(task_, ctx)
