"""The `render` kinds: printable classroom resources rendered to PDF (Jinja2 + WeasyPrint).

- `render`: input is a render task (`kind: "task#render"`, `resource_view`, `paper_size`, ...,
  plus the resource's options); output is the PDF as an output file, described by the result.
- `render.taskqueue`: a task that came in through the Task Queue v1beta2 API with tag `task`.
  Its input is the task (`payloadBase64`); the payload is checked here, so a bad one fails the
  job with a message that names the problem. The Task Queue layer turns the finished job into a
  `result`-tagged task (`result#document` or `result#link`) for the original consumers.

Start a worker with `conveyor worker -i conveyor.kinds.render -q render` (and the Task Queue's
render queue, `<project>.<taskqueue>.render`).
"""

from conveyor.kinds.render.document import Document, render_document
from conveyor.kinds.render.kind import (
    RETRY_LIMIT,
    RenderOutput,
    TaskQueueTask,
    render,
    render_taskqueue,
)
from conveyor.kinds.render.payload import RenderInputError, RenderTask, decode_payload, parse_task

__all__ = [
    "RETRY_LIMIT",
    "Document",
    "RenderInputError",
    "RenderOutput",
    "RenderTask",
    "TaskQueueTask",
    "decode_payload",
    "parse_task",
    "render",
    "render_document",
    "render_taskqueue",
]
