"""`conveyor webhooks`: run the dispatcher, manage signing secrets, queue defaults, endpoints."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from typing import TYPE_CHECKING, Annotated, Any

import typer

from conveyor import errors
from conveyor.cli.output import console, err

if TYPE_CHECKING:
    from conveyor.settings import Settings
    from conveyor.store import Store
    from conveyor.webhooks.dispatcher import Dispatcher

# Commands import what they use when they run: `conveyor --help` loads none of it.

app = typer.Typer(help="Webhooks: the dispatcher, signing secrets, defaults.", no_args_is_help=True)
secret_app = typer.Typer(help="Signing secrets (whsec_...).", no_args_is_help=True)
app.add_typer(secret_app, name="secret")

StoreOpt = Annotated[str | None, typer.Option("--store", help="Store URL (CONVEYOR_STORE).")]


def _settings(store: str | None) -> Settings:
    from conveyor.settings import Settings

    return Settings(store=store) if store else Settings()


def _open(store: str | None) -> Store:
    from conveyor.store import open_store

    return open_store(_settings(store).store_url)


@app.command()
def run(
    store: StoreOpt = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
    parent: Annotated[
        int | None, typer.Option(help="Exit when this process is gone (used by `worker`).")
    ] = None,
) -> None:
    """Deliver webhooks from the store's outbox until SIGTERM/SIGINT (`conveyor worker` also
    runs a dispatcher unless CONVEYOR_WEBHOOK_DISPATCHER=0)."""
    from conveyor.webhooks.dispatcher import Dispatcher

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    opened = _open(store)
    stop = threading.Event()
    dispatcher = Dispatcher(opened)

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()
        dispatcher.wake.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if parent is not None:
        threading.Thread(target=_watch, args=(parent, stop, dispatcher), daemon=True).start()
    try:
        dispatcher.run(stop)
    finally:
        opened.close()


def _watch(parent: int, stop: threading.Event, dispatcher: Dispatcher) -> None:
    """Stop once the parent process is gone (it was killed without stopping us)."""
    while not stop.wait(1.0):
        if os.getppid() != parent:
            stop.set()
            dispatcher.wake.set()


@secret_app.command("create")
def secret_create(
    secret_id: Annotated[str, typer.Argument(help="A name, used as a webhook's secret_id.")],
    store: StoreOpt = None,
) -> None:
    """Create (or rotate in) a secret and print it: give it to the receiver."""
    from conveyor.webhooks import endpoints

    opened = _open(store)
    try:
        console.print(endpoints.rotate_secret(opened, secret_id), highlight=False)
    finally:
        opened.close()


@secret_app.command("rotate")
def secret_rotate(secret_id: Annotated[str, typer.Argument()], store: StoreOpt = None) -> None:
    """Add a new secret; messages are signed with old and new until `secret finish`."""
    secret_create(secret_id, store)


@secret_app.command("finish")
def secret_finish(secret_id: Annotated[str, typer.Argument()], store: StoreOpt = None) -> None:
    """End a rotation: sign with the newest secret only."""
    from conveyor.webhooks import endpoints

    opened = _open(store)
    try:
        dropped = endpoints.drop_old_secrets(opened, secret_id)
        err.print(f"dropped {dropped} old secret(s) of {secret_id!r}")
    finally:
        opened.close()


@app.command("queue-default")
def queue_default(
    queue: Annotated[str, typer.Argument()],
    url: Annotated[str | None, typer.Argument(help="Omit to remove the default.")] = None,
    events: Annotated[str | None, typer.Option(help="Comma-separated event types.")] = None,
    secret_id: Annotated[str | None, typer.Option("--secret-id")] = None,
    store: StoreOpt = None,
) -> None:
    """Send events of jobs in QUEUE that have no webhook of their own to URL."""
    from conveyor.webhooks import endpoints
    from conveyor.webhooks.config import validate_webhook

    opened = _open(store)
    try:
        if url is None:
            endpoints.set_queue_default(opened, queue, None)
            err.print(f"queue {queue!r} has no default webhook now")
            return
        raw: dict[str, Any] = {"url": url}
        if events:
            raw["events"] = [e.strip() for e in events.split(",") if e.strip()]
        if secret_id:
            raw["secret_id"] = secret_id
        endpoints.set_queue_default(opened, queue, validate_webhook(raw))
        err.print(f"queue {queue!r} sends its jobs' events to {url}")
    except errors.ConveyorError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    finally:
        opened.close()


@app.command()
def enable(url: Annotated[str, typer.Argument()], store: StoreOpt = None) -> None:
    """Deliver to an endpoint again after it answered 410 Gone."""
    from conveyor.webhooks import endpoints

    opened = _open(store)
    try:
        was = endpoints.enable(opened, url)
        err.print(f"{url} enabled" if was else f"{url} was not disabled")
    finally:
        opened.close()


@app.command()
def deliveries(job_id: Annotated[str, typer.Argument()], store: StoreOpt = None) -> None:
    """Print a job's delivery log as JSON (from the API at `--url`, else from the store)."""
    settings = _settings(store)
    if settings.url:
        from conveyor.client import Client

        with Client(settings.url, settings.token) as client:
            found = client.deliveries(job_id)
    else:
        from conveyor.store import open_store
        from conveyor.webhooks.dispatcher import deliveries_of

        opened = open_store(settings.store_url)
        try:
            found = [
                {k: v for k, v in d.items() if k != "body"} for d in deliveries_of(opened, job_id)
            ]
        finally:
            opened.close()
    console.print_json(json.dumps(found))
