"""`conveyor swissai`: serve one kind as a stand-alone Swiss AI Center service."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from conveyor.cli.output import err

app = typer.Typer(help="Swiss AI Center services.", no_args_is_help=True)


@app.command()
def serve(
    kind: Annotated[str, typer.Argument(help="A kind declared with swissai.service(...).")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (the service template uses 9090).")] = 9090,
    store: Annotated[str | None, typer.Option("--store", help="Store URL.")] = None,
    imports: Annotated[
        list[str] | None, typer.Option("--import", "-i", help="Module declaring kinds.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Serve KIND at the root path: /status, /tasks/{id}/status, /compute.

    Run `conveyor worker` beside it (same store) to execute the tasks and send the callbacks.
    With CONVEYOR_SWISSAI_ENGINE_URLS and CONVEYOR_SWISSAI_SERVICE_URL set, the service
    announces itself to the engines, pings them at once and every 20 s, and stops its heartbeat
    on shutdown (the engine then shows it `sleeping`).
    """
    import uvicorn

    from conveyor.api.compat.swissai import create_service_app
    from conveyor.api.http import server_options
    from conveyor.kinds.registry import import_kinds
    from conveyor.settings import Settings

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    overrides: dict[str, str] = {}
    if store:
        overrides["store"] = store
    if imports:
        overrides["imports"] = ",".join(imports)
    settings = Settings(**overrides)  # type: ignore[arg-type]
    import_kinds(settings.import_list)
    err.print(f"conveyor swissai: serving {kind} on http://{host}:{port}")
    uvicorn.run(create_service_app(settings, kind), host=host, port=port,
                log_level=log_level.lower(), **server_options())  # fmt: skip
