"""`conveyor` commands. Each is thin: parse, call the service (or the API client), show."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeGuard

import typer
from rich.table import Table

import conveyor.cli.swissai as swissai_cli
import conveyor.cli.webhooks as webhooks_cli
import conveyor.cli.workflows as workflows_cli
from conveyor import errors
from conveyor.cli import db, flow, keys, output, serve
from conveyor.cli.output import console, err
from conveyor.states import JobState

if TYPE_CHECKING:
    from conveyor.cli.remote import Backend, LocalService
    from conveyor.settings import Settings

# Only typer, rich and this package's light modules load at start: each command imports the
# store, the models, the HTTP client... when it runs, so `conveyor --help` stays fast
# (tests/unit/test_cli_startup.py holds it to that).

app = typer.Typer(
    name="conveyor",
    help="A self-hosted job service: submit work, watch it run, get results.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
jobs_app = typer.Typer(help="List, inspect, cancel, retry and delete jobs.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
app.add_typer(keys.app, name="keys")
app.add_typer(webhooks_cli.app, name="webhooks")
app.add_typer(swissai_cli.app, name="swissai")
app.add_typer(db.app, name="db")
app.add_typer(flow.schedules_app, name="schedules")
app.add_typer(flow.limits_app, name="limits")
queues_app = typer.Typer(help="Queues: depths and ages; pause, resume, purge.")
app.add_typer(queues_app, name="queues")
app.add_typer(workflows_cli.app, name="workflows")

StoreOpt = Annotated[
    str | None, typer.Option("--store", help="Store URL (default: CONVEYOR_STORE or local file).")
]
ImportOpt = Annotated[
    list[str] | None,
    typer.Option("--import", "-i", help="Module declaring kinds (repeatable; CONVEYOR_IMPORTS)."),
]
SlotsOpt = serve.SlotsOpt
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
JobIdArg = Annotated[str, typer.Argument(help="Job id, or a unique start of it (6+ digits).")]


def settings_for(store: str | None = None, imports: list[str] | None = None) -> Settings:
    from conveyor.settings import Settings

    overrides: dict[str, Any] = {}
    if store:
        overrides["store"] = store
    if imports:
        overrides["imports"] = ",".join(imports)
    return Settings(**overrides)


def local_service(settings: Settings) -> Backend:
    """The local store, or the API at `--url` / `CONVEYOR_URL` (same methods either way)."""
    from conveyor.cli import remote

    return remote.backend(settings)


def is_local(service: Backend) -> TypeGuard[LocalService]:
    from conveyor.cli.remote import LocalService

    return isinstance(service, LocalService)


def resolve(service: Backend, job_id: str) -> str:
    """The job `job_id` names: a whole id, or a unique start of one."""
    from conveyor.cli import prefix

    return prefix.resolve(service, job_id)


@app.callback()
def main_options(
    url: Annotated[
        str | None,
        typer.Option("--url", envvar="CONVEYOR_URL", help="Talk to this conveyor API."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="CONVEYOR_TOKEN", help="API key for --url."),
    ] = None,
) -> None:
    """A self-hosted job service: submit work, watch it run, get results."""
    # Commands read their settings from the environment; flags win over it.
    if url:
        os.environ["CONVEYOR_URL"] = url
    if token:
        os.environ["CONVEYOR_TOKEN"] = token


def follower(service: Backend, job_id: str) -> Any:
    """How `output.follow` gets updates: the SSE stream remotely, the store locally."""
    from conveyor.cli import remote

    if not isinstance(service, remote.LocalService):
        return remote.StreamPoller(service, job_id)
    return lambda after: (service.get(job_id), service.events(job_id, after))


def register_local_kinds(service: Backend, settings: Settings) -> None:
    """Register the kinds this process can import, so submits work before any worker ran."""
    from conveyor.cli.remote import LocalService
    from conveyor.kinds.registry import import_kinds

    if not isinstance(service, LocalService):
        return  # a remote API knows the kinds its workers registered
    service.store.register_kinds(import_kinds(settings.import_list).infos())
    service.kinds(refresh=True)


def parse_files(values: list[str] | None) -> Any:
    from conveyor.cli import remote

    return remote.parse_files(values)


def save(service: Backend, job_id: str, name: str, dest: Path) -> Path:
    from conveyor.cli import remote

    return remote.save(service, job_id, name, dest)


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


def parse_input(value: str | None) -> Any:
    if value is None:
        return {}
    text = value
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            text = sys.stdin.read() if value == "@-" else path.read_text()
        except OSError as exc:
            fail(f"cannot read input file {path}: {exc.strerror}", 2)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"--input is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", 2)


def setup_logging(level: str) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=level.upper(),
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=err, show_path=False, rich_tracebacks=False)],
    )


# -- submitting ------------------------------------------------------------------------------


@app.command()
def submit(
    kind: Annotated[str, typer.Argument(help="The kind to run, e.g. demo.count.")],
    input: Annotated[
        str | None,
        typer.Option("--input", "-d", help="Input JSON, or @file.json, or @- for stdin."),
    ] = None,
    queue: Annotated[str | None, typer.Option(help="Queue (default: the kind's).")] = None,
    priority: Annotated[int, typer.Option(help="Higher runs first.")] = 0,
    delay: Annotated[
        float | None, typer.Option(help="Start no sooner than this many seconds.")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="Tag (repeatable).")] = None,
    max_attempts: Annotated[int | None, typer.Option(help="Attempts before giving up.")] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Kill the job after this many seconds.")
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Submit at most once per key.")
    ] = None,
    unique_key: Annotated[
        str | None,
        typer.Option(help="If a job with this key is waiting (or running), return it instead."),
    ] = None,
    unique_scope: Annotated[
        str, typer.Option(help="active (waiting or running) or waiting.")
    ] = "active",
    unique_window: Annotated[
        str | None, typer.Option(help="Only jobs created this recently count: 30s, 15m, 1h.")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Show progress until it ends.")
    ] = False,
    file: Annotated[
        list[str] | None,
        typer.Option("--file", "-f", help="Input file: name=path or path (repeatable)."),
    ] = None,
    store: StoreOpt = None,
    imports: ImportOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a job. Prints its id at once; with --wait, follows it and prints the result."""
    from conveyor.models import NewJob

    settings = settings_for(store, imports)
    try:
        files = parse_files(file)
    except ValueError as exc:
        fail(str(exc), 2)
    try:
        new = NewJob.model_validate(
            {"kind": kind, "input": parse_input(input), "queue": queue, "priority": priority,
             "delay_s": delay, "tags": tag or [], "max_attempts": max_attempts,
             "timeout_s": timeout, "idempotency_key": idempotency_key, "unique_key": unique_key,
             "unique_scope": unique_scope,
             "unique_window_s": parse_duration(unique_window) if unique_window else None}
        )  # fmt: skip
    except ValueError as exc:
        fail(str(exc).replace("\n", " "), 2)
    service = local_service(settings)
    try:
        job = service.submit(new, files=files)
    except errors.KindNotFoundError:
        if not is_local(service):
            raise
        register_local_kinds(service, settings)
        job = service.submit(new, files=files)
    if job.warning:
        err.print(f"[yellow]warning:[/] {job.warning}", soft_wrap=True)
    if not wait:
        if as_json:
            output.print_json(job.model_dump(mode="json"))
        else:
            console.print(job.id)
        return
    err.print(f"submitted [bold]{job.id}[/]")
    final = output.follow(job.id, follower(service, job.id))
    finish(final, as_json)


def finish(job: Any, as_json: bool) -> None:
    if as_json:
        output.print_json(job.model_dump(mode="json"))
    elif job.state is JobState.SUCCEEDED:
        output.print_json(job.result)
    elif job.error is not None:
        err.print(f"[red]{job.state.value}:[/] {job.error.type}: {job.error.message}")
    else:
        err.print(f"job {job.state.value}")
    if job.state is not JobState.SUCCEEDED:
        raise typer.Exit(1)


# -- jobs ----------------------------------------------------------------------------------------


@jobs_app.command("list")
def jobs_list(
    state: Annotated[
        list[JobState] | None, typer.Option("--state", "-s", help="Repeatable.")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
    queue: Annotated[str | None, typer.Option(help="Only this queue.")] = None,
    tag: Annotated[str | None, typer.Option(help="Only jobs with this tag.")] = None,
    since: Annotated[datetime | None, typer.Option(help="Created at or after.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    cursor: Annotated[str | None, typer.Option(help="Continue after this page.")] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List jobs, newest first."""
    from conveyor.models import JobFilter

    service = local_service(settings_for(store))
    page = service.list_jobs(
        JobFilter(state=state, kind=kind, queue=queue, tag=tag, created_after=since), cursor, limit
    )
    if as_json:
        output.print_json(page.model_dump(mode="json"))
        return
    console.print(output.jobs_table(page.jobs))
    if page.next_cursor:
        err.print(f"[dim]more: --cursor {page.next_cursor}[/]")


@jobs_app.command("show")
def jobs_show(
    job_id: JobIdArg,
    events: Annotated[
        bool, typer.Option("--events", "-e", help="Also show the event log.")
    ] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one job: state, progress, result or error."""
    service = local_service(settings_for(store))
    job_id = resolve(service, job_id)
    job = service.get(job_id)
    log = service.events(job_id) if events else []
    if as_json:
        body = job.model_dump(mode="json")
        if events:
            body["events"] = [e.model_dump(mode="json") for e in log]
        output.print_json(body)
    else:
        output.show_job(job, log)


@jobs_app.command("wait")
def jobs_wait(
    job_id: JobIdArg,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Follow a job with a live progress bar until it ends; exit 1 unless it succeeded."""
    service = local_service(settings_for(store))
    job_id = resolve(service, job_id)
    final = output.follow(job_id, follower(service, job_id))
    finish(final, as_json)


@jobs_app.command("cancel")
def jobs_cancel(job_id: JobIdArg, store: StoreOpt = None) -> None:
    """Cancel a job: at once if waiting; a running one is stopped by its worker."""
    service = local_service(settings_for(store))
    job_id = resolve(service, job_id)
    job = service.cancel(job_id)
    if job.state is JobState.CANCELLED:
        console.print(f"{job_id} cancelled")
    else:
        console.print(f"{job_id} cancel requested; its worker will stop it")


@jobs_app.command("retry")
def jobs_retry(job_id: JobIdArg, store: StoreOpt = None) -> None:
    """Queue a failed or cancelled job again."""
    service = local_service(settings_for(store))
    job = service.retry(resolve(service, job_id))
    console.print(f"{job.id} {job.state.value}")


@jobs_app.command("delete")
def jobs_delete(job_id: JobIdArg, store: StoreOpt = None) -> None:
    """Delete a finished job and its files."""
    service = local_service(settings_for(store))
    job_id = resolve(service, job_id)
    service.delete(job_id)
    console.print(f"{job_id} deleted")


@jobs_app.command("download")
def jobs_download(
    job_id: JobIdArg,
    name: Annotated[str | None, typer.Argument(help="File name (default: every output).")] = None,
    dest: Annotated[Path, typer.Option("--dest", "-o", help="File or directory.")] = Path("."),
    store: StoreOpt = None,
) -> None:
    """Download a job's output files."""
    service = local_service(settings_for(store))
    job_id = resolve(service, job_id)
    names = (
        [name] if name else [f["name"] for f in service.files(job_id) if f["direction"] == "out"]
    )
    if not names:
        fail(f"job {job_id} has no output files")
    if len(names) > 1 and not dest.is_dir():
        fail(f"{dest} is not a directory; several files to save", 2)
    for each in names:
        console.print(str(save(service, job_id, each, dest)))


# -- kinds, queues, workers, maintenance -------------------------------------------------------


@app.command()
def kinds(store: StoreOpt = None, imports: ImportOpt = None, as_json: JsonOpt = False) -> None:
    """List the registered kinds (and the ones this process can import)."""
    settings = settings_for(store, imports)
    service = local_service(settings)
    register_local_kinds(service, settings)
    found = service.kinds(refresh=True)
    if as_json:
        output.print_json([k.model_dump(mode="json") for k in found.values()])
        return
    table = Table(box=None, header_style="bold")
    for column in ("KIND", "QUEUE", "ATTEMPTS", "TIMEOUT", "INPUT FIELDS", "DESCRIPTION"):
        table.add_column(column)
    for k in found.values():
        fields = ", ".join(k.input_schema.get("properties", {})) or "-"
        timeout = f"{k.timeout_s:g}s" if k.timeout_s else "-"
        summary = k.description.splitlines()[0] if k.description else ""
        table.add_row(k.name, k.queue, str(k.max_attempts), timeout, fields, summary)
    console.print(table)


@queues_app.callback(invoke_without_command=True)
def queues(ctx: typer.Context, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Show each queue's depth, running jobs and age of the oldest waiting job; pause, resume
    or purge one."""
    if ctx.invoked_subcommand is not None:
        return
    stats = local_service(settings_for(store)).queues()
    if as_json:
        output.print_json([s.model_dump(mode="json") for s in stats])
        return
    table = Table(box=None, header_style="bold")
    for column in ("QUEUE", "QUEUED", "SCHEDULED", "RUNNING", "SUCCEEDED", "FAILED", "OLDEST"):
        table.add_column(column)
    for s in stats:
        oldest = f"{s.oldest_queued_age_s:.1f}s" if s.oldest_queued_age_s is not None else "-"
        name = f"{s.name} [yellow](paused)[/]" if s.paused else s.name
        table.add_row(name, str(s.queued), str(s.scheduled), str(s.running), str(s.succeeded),
                      str(s.failed), oldest)  # fmt: skip
    console.print(table)


queues_app.command("pause")(flow.queue_pause)
queues_app.command("resume")(flow.queue_resume)
queues_app.command("purge")(flow.queue_purge)


@app.command()
def workers(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Show the worker processes that are alive and what they run."""
    found = local_service(settings_for(store)).workers()
    if as_json:
        output.print_json([w.model_dump(mode="json") for w in found])
        return
    table = Table(box=None, header_style="bold")
    for column in ("WORKER", "STATE", "QUEUES", "PROCESSES", "SLOTS BUSY/TOTAL", "LAST SEEN"):
        table.add_column(column)
    for w in found:
        slots = "\n".join(f"{u.kind} {u.busy}/{u.total} ({u.runs})" for u in w.slots)
        table.add_row(w.id, w.state, ",".join(w.queues), str(w.concurrency),
                      slots or "-", output.ago(w.last_seen))  # fmt: skip
    console.print(table)


@app.command()
def prune(
    older_than: Annotated[
        str, typer.Option(help="Age of finished jobs to delete: 30s, 15m, 12h, 7d.")
    ] = "7d",
    store: StoreOpt = None,
) -> None:
    """Delete finished jobs (and their files) older than a given age."""
    seconds = parse_duration(older_than)
    service = local_service(settings_for(store))
    if not is_local(service):
        fail("prune runs against the store, not an API URL; run it where the store is", 2)
    count = service.prune(seconds)
    console.print(f"deleted {count} finished jobs older than {older_than}")


def parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except (ValueError, IndexError):
        fail(f"cannot read the duration {text!r}; use e.g. 30s, 15m, 12h or 7d", 2)


# -- running ---------------------------------------------------------------------------------


@app.command()
def worker(
    queues: Annotated[
        list[str] | None,
        typer.Option(
            "--queues",
            "-q",
            help="Queue to serve (repeatable, or comma-separated; default: the queues of the"
            " imported kinds).",
        ),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", min=1, max=256, help="Child processes.")
    ] = None,
    burst: Annotated[
        bool, typer.Option(help="Exit once no job is waiting (tests, batch).")
    ] = False,
    prefetch: Annotated[
        int,
        typer.Option(
            min=1,
            max=256,
            help="Jobs queued per child when jobs are very short (< 5 ms; at most ~10 ms of "
            "work is queued).",
        ),
    ] = 32,
    slots: SlotsOpt = None,
    store: StoreOpt = None,
    imports: ImportOpt = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
    log_format: serve.LogFormatOpt = None,
) -> None:
    """Run a worker: a supervisor with N child processes serving the given queues.

    Async kinds (and sync kinds declared with `threads=N`) run many jobs at once in each child,
    up to `--slots` jobs in the whole worker; other kinds run one job per child.
    """
    from conveyor import limits
    from conveyor.kinds.registry import import_kinds
    from conveyor.store import open_store
    from conveyor.worker.supervisor import Supervisor

    if serve.log_config(log_level, log_format) is None:
        setup_logging(log_level)
    settings = settings_for(store, imports)
    if queues:
        settings = settings.model_copy(update={"queues": ",".join(queues)})
    store_obj = open_store(settings.store_url)
    infos = import_kinds(settings.import_list).infos()
    store_obj.register_kinds(infos)
    limits.register(store_obj, infos)  # the limits the kinds declare, unless an admin set them
    supervisor = Supervisor(
        store_obj, settings, concurrency=concurrency, burst=burst, prefetch=prefetch, slots=slots
    )
    supervisor.install_signal_handlers()
    from conveyor.schedules import ticker
    from conveyor.webhooks.dispatcher import background

    # Webhooks and schedules beside the jobs; a burst worker ends too soon for either.
    with (
        ticker.background(settings, store_obj, enabled=not burst),
        background(settings.store_url, store_obj, enabled=not burst),
    ):
        supervisor.run()
    store_obj.close()


app.command()(serve.api)
app.command()(serve.up)
app.command("render-daemon")(importlib.import_module("conveyor.cli.render_daemon").command)


def main() -> None:
    """Console entry point: user mistakes become one red line and a non-zero exit."""
    try:
        app()
    except errors.ConveyorError as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(1)
    except Exception as exc:
        import httpx  # only when something failed: keeps `conveyor --help` fast

        if not isinstance(exc, httpx.TransportError):
            raise
        url = os.environ.get("CONVEYOR_URL", "the API")
        err.print(
            f"[red]error:[/] cannot reach the conveyor API at {url} ({exc or type(exc).__name__});"
            " start it (`conveyor api` or `conveyor up`) or fix --url / CONVEYOR_URL",
            soft_wrap=True,
        )
        sys.exit(1)
