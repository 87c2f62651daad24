"""`conveyor workflows`: submit a workflow document, list, show, cancel, retry (local or --url)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from conveyor.cli import output
from conveyor.cli.output import console, err

if TYPE_CHECKING:
    from conveyor.cli.remote import Backend
    from conveyor.workflows.views import Workflow

# Like every command module, this one imports the models, the store and the client only when a
# command runs (`conveyor --help` stays fast: tests/unit/test_cli_startup.py).
FINAL = ("succeeded", "failed", "cancelled")

app = typer.Typer(help="Workflows: named steps with dependencies.", no_args_is_help=True)

StoreOpt = Annotated[str | None, typer.Option("--store", help="Store URL (CONVEYOR_STORE).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ImportOpt = Annotated[
    list[str] | None,
    typer.Option("--import", "-i", help="Module declaring kinds (repeatable; CONVEYOR_IMPORTS)."),
]

STYLE = {
    "pending": "blue", "running": "yellow", "succeeded": "green", "failed": "red",
    "cancelled": "magenta", "blocked": "dim", "queued": "blue", "scheduled": "cyan",
    "skipped": "dim", "upstream_failed": "red",
}  # fmt: skip


def _backend(store: str | None, imports: list[str] | None = None) -> Backend:
    from conveyor.cli import remote
    from conveyor.cli.serve import cli_settings
    from conveyor.kinds.registry import import_kinds

    settings = cli_settings(store, imports)
    backend = remote.backend(settings)
    if isinstance(backend, remote.LocalService):
        # Submitting locally needs the kinds' schemas before any worker has registered them.
        backend.store.register_kinds(import_kinds(settings.import_list).infos())
        backend.kinds(refresh=True)
    return backend


def _styled(state: str) -> str:
    return f"[{STYLE.get(state, 'white')}]{state}[/]"


def _read_document(source: str) -> Any:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        err.print(f"[red]error:[/] cannot read {source}: {exc.strerror}")
        raise typer.Exit(2) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        err.print(f"[red]error:[/] {source} is not valid JSON ({exc.msg} at line {exc.lineno})")
        raise typer.Exit(2) from None


def steps_table(workflow: Workflow) -> Table:
    table = Table(title=f"workflow {workflow.id} {workflow.name or ''}".strip(), show_lines=False)
    for column in ("step", "kind", "state", "attempt", "after", "job"):
        table.add_column(column)
    for step in workflow.steps:
        table.add_row(
            step.name, step.kind, _styled(step.state), str(step.attempt),
            ", ".join(step.depends_on) or "-", step.job_id or "-",
        )  # fmt: skip
    return table


def _summary(workflow: Workflow) -> str:
    p = workflow.progress
    return f"{_styled(workflow.state)} {p.done}/{p.total} steps done"


def _follow(backend: Backend, workflow: Workflow) -> Workflow:
    """A live progress bar of steps done until the workflow ends."""
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task(workflow.state, total=workflow.progress.total)
        delay = 0.1
        while workflow.state not in FINAL:
            time.sleep(delay)
            delay = min(1.0, delay * 1.5)
            workflow = backend.workflow(workflow.id)
            bar.update(task, completed=workflow.progress.done, description=workflow.state)
        bar.update(task, completed=workflow.progress.done, description=workflow.state)
    return workflow


@app.command("submit")
def submit(
    document: Annotated[str, typer.Argument(help="A workflow document (JSON file, - for stdin).")],
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Follow it until it ends.")] = False,
    store: StoreOpt = None,
    imports: ImportOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a workflow; with --wait, follow its progress and exit 1 unless it succeeded."""
    backend = _backend(store, imports)
    created = backend.submit_workflow(_read_document(document))
    if not wait:
        if as_json:
            output.print_json(created.model_dump(mode="json", exclude_none=True))
        else:
            console.print(created.id)
        return
    err.print(f"workflow {created.id}: {created.progress.total} steps")
    final = _follow(backend, created)
    if as_json:
        output.print_json(final.model_dump(mode="json", exclude_none=True))
    else:
        console.print(steps_table(final))
    if final.state != "succeeded":
        raise typer.Exit(1)


@app.command("list")
def list_(
    state: Annotated[str | None, typer.Option("--state", "-s", help="Only this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
    cursor: Annotated[str | None, typer.Option(help="Continue after this page.")] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List workflows, newest first, with their state and progress."""
    page = _backend(store).list_workflows(state, cursor, limit)
    if as_json:
        output.print_json(page.model_dump(mode="json", exclude_none=True))
        return
    table = Table()
    for column in ("id", "name", "state", "done", "created"):
        table.add_column(column)
    for item in page.workflows:
        table.add_row(
            item.id, item.name or "-", _styled(item.state),
            f"{item.progress.done}/{item.progress.total}", output.ago(item.created_at),
        )  # fmt: skip
    console.print(table)
    if page.next_cursor:
        err.print(f"[dim]more: --cursor {page.next_cursor}[/]")


@app.command("show")
def show(
    workflow_id: Annotated[str, typer.Argument(help="Workflow id.")],
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Follow it until it ends.")] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a workflow: its state, progress and every step."""
    backend = _backend(store)
    found = backend.workflow(workflow_id)
    if wait:
        found = _follow(backend, found)
    if as_json:
        output.print_json(found.model_dump(mode="json", exclude_none=True))
        return
    console.print(steps_table(found))
    console.print(_summary(found))


@app.command("cancel")
def cancel(workflow_id: Annotated[str, typer.Argument()], store: StoreOpt = None) -> None:
    """Cancel every step that has not ended."""
    found = _backend(store).cancel_workflow(workflow_id)
    console.print(f"{workflow_id} {_summary(found)}")


@app.command("retry")
def retry(workflow_id: Annotated[str, typer.Argument()], store: StoreOpt = None) -> None:
    """Run the failed, cancelled and skipped steps again (and what depends on them)."""
    found = _backend(store).retry_workflow(workflow_id)
    console.print(f"{workflow_id} {_summary(found)}")
