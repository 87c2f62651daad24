"""How the CLI shows jobs: tables, panels, JSON, and a live progress bar."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from conveyor.states import JobState

if TYPE_CHECKING:
    from conveyor.models import Job, JobEvent

console = Console()
err = Console(stderr=True)

STATE_STYLE = {
    JobState.BLOCKED: "bright_black",
    JobState.SCHEDULED: "cyan",
    JobState.QUEUED: "blue",
    JobState.RUNNING: "yellow",
    JobState.SUCCEEDED: "green",
    JobState.FAILED: "red",
    JobState.CANCELLED: "magenta",
}


def ago(when: datetime | None) -> str:
    if when is None:
        return "-"
    seconds = (datetime.now(UTC) - when).total_seconds()
    if abs(seconds) < 60:
        return f"{seconds:.0f}s ago" if seconds >= 0 else f"in {-seconds:.0f}s"
    if abs(seconds) < 3600:
        return f"{seconds / 60:.0f}m ago" if seconds >= 0 else f"in {-seconds / 60:.0f}m"
    return when.strftime("%Y-%m-%d %H:%M:%S")


def state_text(state: JobState) -> str:
    return f"[{STATE_STYLE[state]}]{state.value}[/]"


def print_json(value: Any) -> None:
    console.print_json(json.dumps(value, default=str))


def jobs_table(jobs: Sequence[Job]) -> Table:
    table = Table(box=None, header_style="bold")
    # Ids are what users copy: never cut them; narrow terminals squeeze the other columns.
    table.add_column("ID", no_wrap=True, min_width=max((len(job.id) for job in jobs), default=2))
    for column in ("KIND", "QUEUE", "STATE", "ATTEMPT", "PROGRESS", "CREATED"):
        table.add_column(column)
    for job in jobs:
        table.add_row(
            job.id, job.kind, job.queue, state_text(job.state),
            f"{job.attempt}/{job.max_attempts}", progress_text(job), ago(job.created_at),
        )  # fmt: skip
    return table


def progress_text(job: Job) -> str:
    p = job.progress
    if p is None:
        return "-"
    if p.total:
        return f"{100 * p.current / p.total:.0f}%"
    return f"{p.current:g}"


def show_job(job: Job, events: Sequence[JobEvent] = ()) -> None:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("id", job.id)
    table.add_row("kind", job.kind)
    table.add_row("queue", f"{job.queue} (priority {job.priority})")
    pending_cancel = job.cancel_requested and not job.state.is_final
    table.add_row(
        "state", state_text(job.state) + (" (cancel requested)" if pending_cancel else "")
    )
    table.add_row("attempt", f"{job.attempt} of {job.max_attempts}")
    table.add_row("created", ago(job.created_at))
    if job.started_at:
        table.add_row("started", ago(job.started_at))
    if job.finished_at:
        table.add_row("finished", ago(job.finished_at))
    if job.tags:
        table.add_row("tags", ", ".join(job.tags))
    if job.progress:
        table.add_row("progress", f"{progress_text(job)} {job.progress.message or ''}")
    table.add_row("input", json.dumps(job.input))
    if job.result is not None:
        table.add_row("result", json.dumps(job.result))
    if job.error:
        table.add_row(
            "error", f"[red]{job.error.type}: {job.error.message}[/] ({job.error.reason})"
        )
    console.print(table)
    if job.error and job.error.traceback:
        console.print(f"[dim]{job.error.traceback}[/]")
    if events:
        console.print()
        ev = Table(box=None, header_style="bold", title="events", title_justify="left")
        for column in ("SEQ", "AT", "TYPE", "DATA"):
            ev.add_column(column)
        for e in events:
            ev.add_row(str(e.seq), e.at.strftime("%H:%M:%S.%f")[:-3], e.type, json.dumps(e.data))
        console.print(ev)


def follow(
    job_id: str,
    poll: Callable[[int], tuple[Job, list[JobEvent]]],
    interval: float = 0.1,
    quiet: bool = False,
) -> Job:
    """Show a live progress bar until the job finishes; return the final job."""
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    after = 0
    with Progress(
        TextColumn("[bold]{task.fields[kind]}[/] {task.fields[state]}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[message]}"),
        console=err,
        transient=False,
        disable=quiet,
    ) as bar:
        task = bar.add_task("job", total=None, kind="", state="", message="")
        while True:
            job, events = poll(after)
            for event in events:
                after = max(after, event.seq)
                if event.type == "log":
                    bar.console.print(f"[dim]{event.data.get('line', '')}[/]")
            p = job.progress
            total = p.total if p and p.total else None
            completed = p.current if p else 0
            if job.state is JobState.SUCCEEDED:
                total = total or 1
                completed = total
            bar.update(
                task,
                kind=job.kind,
                state=state_text(job.state),
                completed=completed,
                total=total,
                message=(p.message or "") if p else "",
            )
            if job.state.is_final:
                return job
            time.sleep(interval)
