"""`conveyor render-daemon`: render `task`-tagged tasks pulled through the v1beta2 API.

For deployments that keep the original pull model. Like the CS Unplugged render daemons, it
leases up to `--tasks` tasks tagged `task`, renders each, inserts a `result`-tagged task and
deletes the input task. An unexpected error shortens the task's lease to one second (PATCH)
so that it is retried soon; while the API is unreachable (restarting) the daemon waits, backing
off from 1 s to 60 s, and goes on; a task leased `--retry-limit` times gets a failure result. A
task that cannot be rendered as given (bad payload, view or option) gets a failure result at
once, naming the problem: retrying it would fail the same way.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

log = logging.getLogger("conveyor.render_daemon")
NOISY_LOGGERS = ("weasyprint", "fontTools")


def command(
    url: Annotated[
        str, typer.Option(envvar="CONVEYOR_URL", help="The conveyor API serving v1beta2.")
    ] = "http://127.0.0.1:8000",
    token: Annotated[
        str | None, typer.Option(envvar="CONVEYOR_TOKEN", help="API key (scope work+submit).")
    ] = None,
    project: Annotated[str, typer.Option(help="Task Queue project.")] = "cs-unplugged",
    queue: Annotated[str, typer.Option(help="Task Queue name.")] = "render-queue",
    tasks: Annotated[int, typer.Option(min=1, max=1000, help="Tasks per lease.")] = 20,
    lease_secs: Annotated[
        float | None,
        typer.Option(
            min=1,
            help="Lease length (default: tasks x task seconds = 1000 s); a"
            " killed daemon's tasks wait this long before another daemon gets them.",
        ),
    ] = None,
    sleep: Annotated[float, typer.Option(min=0, help="Seconds between empty leases.")] = 10.0,
    retry_limit: Annotated[int, typer.Option(min=1, help="Leases before giving up.")] = 5,
    task_seconds: Annotated[
        float, typer.Option(min=0, help="Render time limit (x2.33 on the first retry...).")
    ] = 50.0,
    max_document_bytes: Annotated[
        int | None,
        typer.Option(
            min=1, help="Larger results go as result#link (base64 bytes; default 680 KiB)."
        ),
    ] = None,
    burst: Annotated[bool, typer.Option(help="Stop once no `task` task is left.")] = False,
    max_loops: Annotated[int | None, typer.Option(min=1, help="Stop after N leases.")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Render `task`-tagged tasks leased through the Task Queue v1beta2 API (pull model)."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    if log_level.lower() != "debug":
        # WeasyPrint logs every layout step of every page at INFO; fontTools each subset font.
        for noisy in NOISY_LOGGERS:
            logging.getLogger(noisy).setLevel(logging.WARNING)
    # Imported here: importing the render kinds registers them, which `conveyor worker` must
    # only do when asked to (`-i conveyor.kinds.render`).
    from conveyor.kinds.render.daemon import DaemonConfig, RenderDaemon
    from conveyor.taskqueue.client import TaskQueueClient
    from conveyor.taskqueue.replies import MAX_DOCUMENT_BYTES

    max_document_bytes = max_document_bytes or MAX_DOCUMENT_BYTES

    config = DaemonConfig(tasks, lease_secs, sleep, retry_limit, max_document_bytes,
                          task_seconds)  # fmt: skip
    client = TaskQueueClient(url, project, queue, token)
    try:
        stats = RenderDaemon(client, config).run(burst=burst, max_loops=max_loops)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finally:
        client.close()
    log.info("leased %d tasks: %d rendered, %d failure results, %d retried", stats.leased,
             stats.succeeded, stats.failed, stats.retried)  # fmt: skip
