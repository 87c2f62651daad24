"""`conveyor api` (the HTTP API) and `conveyor up` (API + workers + sweeper in one command)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from conveyor.cli.output import err

if TYPE_CHECKING:
    import uvicorn

    from conveyor.settings import Settings
    from conveyor.store import Store

# The commands import the server, the store and the kinds when they run, so that every other
# `conveyor` command (and `--help`) starts without them.

log = logging.getLogger("conveyor.cli")

HostOpt = Annotated[
    str, typer.Option(help="Address to listen on; other than loopback needs an API key.")
]
PortOpt = Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free port).")]
StoreOpt = Annotated[
    str | None, typer.Option("--store", help="Store URL (default: CONVEYOR_STORE or local file).")
]
ImportOpt = Annotated[
    list[str] | None,
    typer.Option("--import", "-i", help="Module declaring kinds (repeatable; CONVEYOR_IMPORTS)."),
]
SlotsOpt = Annotated[
    int | None,
    typer.Option(
        "--slots", min=1, max=100_000,
        help="Jobs in flight at most (async and threaded kinds run many per child; "
        "CONVEYOR_SLOTS, default 10000).",
    ),
]  # fmt: skip

LogOpt = Annotated[str, typer.Option(help="debug, info, warning, error.")]


class LogFormat(StrEnum):
    text = "text"
    json = "json"


LogFormatOpt = Annotated[
    LogFormat | None,
    typer.Option(
        "--log-format",
        help="text (for a terminal) or json (one object per line); CONVEYOR_LOG_FORMAT.",
    ),
]


def log_config(level: str, log_format: LogFormat | None) -> dict[str, Any] | None:
    """JSON logging when asked for (by the flag or CONVEYOR_LOG_FORMAT): configured now, and
    returned as uvicorn's `log_config`; None keeps the terminal format."""
    from conveyor.telemetry import logs

    if (log_format or logs.wanted()) != "json":
        return None
    logs.use_json(level)
    return logs.dict_config(level)


def cli_settings(store: str | None, imports: list[str] | None, demo: bool = False) -> Settings:
    """Settings from the common --store/--import options (and --demo's workloads) over the
    environment: one reading for every command that opens a store."""
    from conveyor.settings import Settings

    overrides: dict[str, Any] = {}
    if store:
        overrides["store"] = store
    if imports:
        overrides["imports"] = ",".join(imports)
    settings = Settings(**overrides)
    if demo:
        wanted = [m for m in demo_imports() if m not in settings.import_list]
        settings = settings.model_copy(
            update={"imports": ",".join([*settings.import_list, *wanted])}
        )
    return settings


#: The built-in workloads `--demo` serves when their extras are installed: the demo kinds, the
#: Project Allocation solver (the dashboard's Allocation page submits `allocate` jobs), the
#: Task Queue render kinds, the kge-server kinds, the anonlink linkage kinds and the Swiss AI
#: example services. Each runs in its own queue(s), which the worker then serves.
WORKLOADS = (
    ("conveyor.kinds.demo", ""),
    ("conveyor.kinds.allocate", "allocation"),
    ("conveyor.kinds.render", "render"),
    ("conveyor.kinds.kge", "kge"),
    ("conveyor.kinds.linkage", "linkage"),
    ("conveyor.kinds.examples", "examples"),
)


def demo_imports() -> list[str]:
    """What `--demo` serves: every built-in workload whose dependencies import here; the others
    are named in the log with the extra that brings them (`make run` installs them all)."""
    import importlib

    found = []
    for module, extra in WORKLOADS:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            log.warning("not serving %s: %s (pip install 'conveyor[%s]')", module, exc, extra)
            continue
        found.append(module)
    return found


def check_bind(store: Store, host: str) -> None:
    """Refuse to listen beyond loopback while no API key exists (anyone could submit)."""
    from conveyor.api import auth

    if auth.is_loopback(host) or auth.list_keys(store):
        return
    say(
        f"[red]error:[/] refusing to listen on {host}: no API key exists, so anyone who can reach"
        " this address could use the API.\n  Create one first:  [bold]conveyor keys create"
        " admin --scope admin[/]\n  or listen on loopback only:  [bold]--host 127.0.0.1[/]",
        level=logging.ERROR,
    )
    raise typer.Exit(2)


def say(text: str, level: int = logging.INFO) -> None:
    """A message for the operator: Rich markup on a terminal, one log line in JSON mode (so a
    log collector never meets a line that is not JSON)."""
    from conveyor.telemetry import logs

    if logs.wanted() != "json":
        err.print(text, soft_wrap=True)
        return
    from rich.text import Text

    log.log(level, " ".join(Text.from_markup(text).plain.split()))


def register_kinds(store: Store, settings: Settings) -> None:
    """Register the kinds this process can import, so the API accepts them before a worker
    has started. Modules that only exist on worker machines are skipped with a warning."""
    from conveyor import limits
    from conveyor.kinds.registry import import_kinds, registry
    from conveyor.schedules.service import Schedules
    from conveyor.service import Service
    from conveyor.storage import open_storage

    for module in settings.import_list:
        try:
            store.register_kinds(import_kinds([module]).infos())
        except Exception as exc:  # a bad module must not stop the API from serving
            log.warning("cannot import kinds from %s: %s", module, exc)
    # The limits and schedules the imported kinds declare (an admin's changes are kept).
    limits.register(store, registry.infos())
    declared = registry.schedules()
    if declared:
        service = Service(store, open_storage(settings.storage_url))
        Schedules(service).register(declared)


def _server(
    settings: Settings, host: str, port: int, log_level: str, json_logs: dict[str, Any] | None
) -> uvicorn.Server:
    import uvicorn

    from conveyor.api.app import create_app
    from conveyor.api.http import server_options

    app = create_app(settings)
    app.state.bind_host = host
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level.lower(), access_log=False,
        timeout_graceful_shutdown=5, lifespan="on", **server_options(),
        **_uvicorn_logging(json_logs),
    )  # fmt: skip
    return uvicorn.Server(config)


def _uvicorn_logging(json_logs: dict[str, Any] | None) -> dict[str, Any]:
    return {} if json_logs is None else {"log_config": json_logs}


def _url(server: uvicorn.Server, host: str) -> str:
    port = server.config.port
    if server.started and server.servers and server.servers[0].sockets:
        port = server.servers[0].sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def api(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    store: StoreOpt = None,
    imports: ImportOpt = None,
    processes: Annotated[
        int, typer.Option("--processes", "-p", min=1, max=64, help="API server processes.")
    ] = 1,
    log_level: LogOpt = "info",
    log_format: LogFormatOpt = None,
) -> None:
    """Serve the HTTP API (docs at /docs). Workers run separately: `conveyor worker`."""
    import uvicorn

    from conveyor.api.http import server_options
    from conveyor.store import open_store

    json_logs = log_config(log_level, log_format)
    settings = cli_settings(store, imports)
    opened = open_store(settings.store_url)
    try:
        check_bind(opened, host)
        register_kinds(opened, settings)
    finally:
        opened.close()
    say(f"conveyor API on [bold]http://{host}:{port}[/] (docs: /docs)")
    if processes == 1:
        _server(settings, host, port, log_level, json_logs).run()
        return
    # Several processes share the socket; each builds its app from the environment.
    os.environ["CONVEYOR_STORE"] = settings.store_url
    os.environ["CONVEYOR_IMPORTS"] = settings.imports
    uvicorn.run(
        "conveyor.api.app:create_app", factory=True, host=host, port=port, workers=processes,
        log_level=log_level.lower(), access_log=False, timeout_graceful_shutdown=5,
        **server_options(), **_uvicorn_logging(json_logs),
    )  # fmt: skip


def up(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", min=1, max=256, help="Child processes.")
    ] = None,
    demo: Annotated[
        bool,
        typer.Option(
            help="Also serve the demo kinds and every built-in workload whose extra is"
            " installed (allocation, render, kge, linkage, Swiss AI examples)."
        ),
    ] = False,
    slots: SlotsOpt = None,
    store: StoreOpt = None,
    imports: ImportOpt = None,
    log_level: LogOpt = "info",
    log_format: LogFormatOpt = None,
) -> None:
    """Run everything on this machine: the API, a worker supervisor and the lease sweeper.

    Ctrl-C drains: running jobs get the grace period to finish, then the API stops.
    """
    from conveyor import limits
    from conveyor.cli.app import setup_logging
    from conveyor.kinds.registry import import_kinds
    from conveyor.store import open_store
    from conveyor.worker.supervisor import Supervisor

    json_logs = log_config(log_level, log_format)
    if json_logs is None:
        setup_logging(log_level)
    settings = cli_settings(store, imports, demo)
    worker_store = open_store(settings.store_url)
    check_bind(worker_store, host)
    infos = import_kinds(settings.import_list).infos()
    worker_store.register_kinds(infos)
    limits.register(worker_store, infos)  # the limits the kinds declare, unless an admin set them
    supervisor = Supervisor(worker_store, settings, concurrency=concurrency, slots=slots)
    server = _server(settings, host, port, log_level, json_logs)
    thread = threading.Thread(target=server.run, name="conveyor-api", daemon=True)
    thread.start()
    ready = threading.Event()

    def announce() -> None:
        while thread.is_alive() and not server.started:
            ready.wait(0.05)
        if not server.started:  # e.g. the port is taken: stop the workers the usual way
            os.kill(os.getpid(), signal.SIGTERM)
            return
        url = _url(server, host)
        say(
            f"conveyor is up\n  API   [bold]{url}[/]\n  docs  [bold]{url}/docs[/]\n"
            f"  UI    [bold]{url}/ui/[/]\n"
            f"  store [bold]{settings.store_url}[/]\n  files [bold]{settings.storage_url}[/]\n"
            f"  kinds {', '.join(settings.import_list)}\n  Ctrl-C drains and stops."
        )

    threading.Thread(target=announce, name="conveyor-announce", daemon=True).start()
    supervisor.install_signal_handlers()
    from conveyor.schedules import ticker
    from conveyor.webhooks.dispatcher import background

    try:
        # Webhooks and schedules beside the jobs.
        with (
            ticker.background(settings, worker_store),
            background(settings.store_url, worker_store),
        ):
            supervisor.run()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        worker_store.close()
    if not server.started:
        raise typer.Exit(1)
