"""`conveyor schedules ...`, `conveyor limits ...` and `conveyor queues pause|resume|purge`.

Each works on the local store, or on the API at `--url` / `CONVEYOR_URL` (an admin key for
changes), through the same methods (`remote.backend`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.table import Table

from conveyor.cli import output
from conveyor.cli.output import console, err

if TYPE_CHECKING:
    from conveyor.cli.remote import Backend
    from conveyor.limits import LimitView
    from conveyor.models import Limit
    from conveyor.schedules.model import ScheduleView
    from conveyor.settings import Settings

# Like every command module, this one imports the models, the store and the client only when a
# command runs (`conveyor --help` stays fast: tests/unit/test_cli_startup.py).

schedules_app = typer.Typer(
    help="Create, list, pause, resume and delete schedules; preview their next runs.",
    no_args_is_help=True,
)
limits_app = typer.Typer(
    help="Concurrency and rate limits: list them with what waits behind them, set, delete.",
    no_args_is_help=True,
)

StoreOpt = Annotated[
    str | None, typer.Option("--store", help="Store URL (default: CONVEYOR_STORE or local file).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Id = Annotated[str, typer.Argument(help="The schedule's id.")]


def settings(store: str | None) -> Settings:
    from conveyor.settings import Settings

    return Settings(store=store) if store else Settings()


def backend(store: str | None) -> Backend:
    from conveyor.cli import remote

    return remote.backend(settings(store))


def refuse(message: str) -> NoReturn:
    err.print(f"[red]error:[/] {message}")
    raise typer.Exit(2)


def when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# -- schedules -------------------------------------------------------------------------------


@schedules_app.command("list")
def schedules_list(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Every schedule: timing, state, last and next run."""
    found = backend(store).schedules()
    if as_json:
        output.print_json([s.model_dump(mode="json") for s in found])
        return
    table = Table(box=None, header_style="bold")
    for column in ("ID", "KIND", "WHEN", "STATE", "LAST TICK", "NEXT RUN", "SOURCE"):
        table.add_column(column)
    for s in found:
        timing = f"{s.cron} ({s.timezone})" if s.cron else f"every {s.every_s}s"
        state = "[yellow]paused[/]" if s.paused else "active"
        if s.state.last_error:
            state += " [red](error)[/]"
        table.add_row(s.id, s.kind, timing, state, when(s.state.last_tick),
                      when(s.next_runs[0] if s.next_runs else None), s.source)  # fmt: skip
    console.print(table)


@schedules_app.command("show")
def schedules_show(schedule_id: Id, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """One schedule in full, with its next runs."""
    show(backend(store).schedule(schedule_id), as_json)


def show(schedule: ScheduleView, as_json: bool) -> None:
    if as_json:
        output.print_json(schedule.model_dump(mode="json"))
        return
    timing = schedule.cron or f"every {schedule.every_s}s"
    console.print(f"[bold]{schedule.id}[/]  {schedule.kind}  {timing}  ({schedule.explain})")
    for label, value in (
        ("time zone", schedule.timezone), ("input", json.dumps(schedule.input)),
        ("misfire", f"{schedule.misfire} (catch up at most {schedule.catch_up_max}, grace"
                    f" {schedule.misfire_grace_s:g}s)"),
        ("overlap", schedule.overlap), ("paused", "yes" if schedule.paused else "no"),
        ("source", schedule.source), ("last tick", when(schedule.state.last_tick)),
        ("last job", schedule.state.last_job_id or "-"),
        ("skipped", str(schedule.state.skipped)),
        ("last error", schedule.state.last_error or "-"),
    ):  # fmt: skip
        console.print(f"  {label:<10} {value}", highlight=False)
    for moment in schedule.next_runs:
        console.print(f"  next       {when(moment)}")


@schedules_app.command("create")
def schedules_create(
    schedule_id: Id,
    kind: Annotated[str, typer.Option("--kind", "-k", help="The kind to submit.")],
    cron: Annotated[
        str | None, typer.Option(help="Cron expression, e.g. '30 2 * * *' (5 or 6 fields).")
    ] = None,
    timezone: Annotated[str, typer.Option("--tz", help="IANA time zone of --cron.")] = "UTC",
    every: Annotated[int | None, typer.Option(min=1, help="Or: every N seconds.")] = None,
    input: Annotated[str | None, typer.Option("--input", "-d", help="Input JSON.")] = None,
    queue: Annotated[str | None, typer.Option(help="Queue (default: the kind's).")] = None,
    misfire: Annotated[str, typer.Option(help="skip, run_once or catch_up.")] = "run_once",
    catch_up_max: Annotated[int, typer.Option(min=1, help="catch_up: at most N.")] = 10,
    overlap: Annotated[str, typer.Option(help="allow, forbid or replace.")] = "allow",
    paused: Annotated[bool, typer.Option(help="Create it paused.")] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace a schedule with this id.")
    ] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a schedule: --cron (with --tz) or --every."""
    from pydantic import ValidationError

    from conveyor import errors
    from conveyor.cli import remote
    from conveyor.schedules.model import NewSchedule

    try:
        body: Any = json.loads(input) if input else {}
    except json.JSONDecodeError as exc:
        refuse(f"--input is not valid JSON ({exc.msg})")
    try:
        new = NewSchedule.model_validate(
            {"id": schedule_id, "kind": kind, "cron": cron, "timezone": timezone,
             "every_s": every, "input": body, "queue": queue, "misfire": misfire,
             "catch_up_max": catch_up_max, "overlap": overlap, "paused": paused}
        )  # fmt: skip
    except ValidationError as exc:
        refuse("; ".join(e["msg"] for e in exc.errors()))
    found = settings(store)
    ops = remote.backend(found)
    save = ops.put_schedule if replace else ops.create_schedule
    try:
        made = save(new)
    except errors.KindNotFoundError:
        if not isinstance(ops, remote.LocalService):
            raise
        from conveyor.cli.app import register_local_kinds

        register_local_kinds(ops, found)  # as `submit` does: the kinds this process imports
        made = save(new)
    show(made, as_json)


@schedules_app.command("pause")
def schedules_pause(schedule_id: Id, store: StoreOpt = None) -> None:
    """Pause: no jobs until resumed."""
    backend(store).pause_schedule(schedule_id)
    console.print(f"{schedule_id} paused")


@schedules_app.command("resume")
def schedules_resume(schedule_id: Id, store: StoreOpt = None) -> None:
    """Resume from the next tick (the ticks passed while paused are not made up for)."""
    made = backend(store).resume_schedule(schedule_id)
    upcoming = made.next_runs[0] if made.next_runs else None
    console.print(f"{schedule_id} resumed; next run {when(upcoming)}")


@schedules_app.command("delete")
def schedules_delete(schedule_id: Id, store: StoreOpt = None) -> None:
    """Delete a schedule (its jobs stay)."""
    backend(store).delete_schedule(schedule_id)
    console.print(f"{schedule_id} deleted")


@schedules_app.command("next")
def schedules_next(
    schedule_id: Id,
    n: Annotated[int, typer.Option("-n", min=1, max=100, help="How many.")] = 10,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The next N runs, in UTC and in the schedule's time zone."""
    from conveyor.schedules.timing import zone

    ops = backend(store)
    runs = ops.schedule_runs(schedule_id, n)
    if as_json:
        output.print_json([r.isoformat() for r in runs])
        return
    name = ops.schedule(schedule_id).timezone
    for moment in runs:
        local = moment.astimezone(zone(name))
        console.print(f"{when(moment)}   {local:%Y-%m-%d %H:%M:%S %Z} ({name})", highlight=False)


# -- limits --------------------------------------------------------------------------------------


@limits_app.command("list")
def limits_list(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Every limit, who set it, and its jobs running and waiting."""
    found = backend(store).limits()
    if as_json:
        output.print_json([v.model_dump(mode="json") for v in found])
        return
    table = Table(box=None, header_style="bold")
    for column in ("TARGET", "MAX RUNNING", "RATE", "STRATEGY", "RUNNING", "WAITING", "HELD",
                   "SET BY"):  # fmt: skip
        table.add_column(column)
    for v in found:
        table.add_row(v.target, _num(v.max_running), rate_text(v), v.strategy, str(v.running),
                      str(v.waiting), str(v.held), source_text(v))  # fmt: skip
    console.print(table)


def rate_text(limit: Limit) -> str:
    return "-" if limit.rate is None else f"{limit.rate}/{limit.per_s:g}s"


def source_text(view: LimitView) -> str:
    if view.source == "admin":
        return f"admin ({view.by})" if view.by else "admin"
    return view.source or "-"


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)


@limits_app.command("set")
def limits_set(
    target: Annotated[str, typer.Argument(help="queue:<name>, kind:<name> or key:<kind>.")],
    max_running: Annotated[int | None, typer.Option(min=1, help="Running at once.")] = None,
    rate: Annotated[int | None, typer.Option(min=1, help="Starts per --per.")] = None,
    per: Annotated[str, typer.Option(help="The rate's period: 1s, 1m, 1h.")] = "1s",
    strategy: Annotated[
        str, typer.Option(help="queue, cancel_newest or cancel_in_progress (key: only).")
    ] = "queue",
    store: StoreOpt = None,
) -> None:
    """Create or replace a limit; every worker obeys it at its next claim, no restart."""
    from pydantic import ValidationError

    from conveyor.cli.app import parse_duration
    from conveyor.models import Limit

    try:
        limit = Limit.model_validate(
            {"target": target, "max_running": max_running, "rate": rate,
             "per_s": parse_duration(per), "strategy": strategy}
        )  # fmt: skip
    except ValidationError as exc:
        refuse("; ".join(e["msg"] for e in exc.errors()))
    made = backend(store).set_limit(limit)
    console.print(f"{made.target}: max running {_num(made.max_running)}, rate {rate_text(made)}")


@limits_app.command("delete")
def limits_delete(
    target: Annotated[str, typer.Argument(help="queue:<name>, kind:<name> or key:<kind>.")],
    store: StoreOpt = None,
) -> None:
    """Remove a limit (one declared in code comes back when a worker declaring it starts)."""
    backend(store).delete_limit(target)
    console.print(f"{target}: no limit")


# -- queues --------------------------------------------------------------------------------------


def queue_pause(
    queue: Annotated[str, typer.Argument(help="The queue.")], store: StoreOpt = None
) -> None:
    """Pause a queue: workers claim nothing from it; submits still land; running jobs go on."""
    backend(store).pause_queue(queue)
    console.print(f"queue {queue} paused")


def queue_resume(
    queue: Annotated[str, typer.Argument(help="The queue.")], store: StoreOpt = None
) -> None:
    """Resume a paused queue."""
    backend(store).resume_queue(queue)
    console.print(f"queue {queue} resumed")


def queue_purge(
    queue: Annotated[str, typer.Argument(help="The queue.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    store: StoreOpt = None,
) -> None:
    """Cancel every waiting job of a queue (reason `purged`); running jobs are left alone."""
    if not yes and not typer.confirm(f"Cancel every waiting job of queue {queue!r}?"):
        raise typer.Exit(1)
    count = backend(store).purge_queue(queue)
    console.print(f"queue {queue}: {count} waiting jobs cancelled")
