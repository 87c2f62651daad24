"""`conveyor keys create|list|revoke|quota`: the API keys the HTTP API accepts."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from conveyor.cli import output
from conveyor.cli.output import console, err

if TYPE_CHECKING:
    from conveyor.api.auth import Quota
    from conveyor.store import Store

# Commands import what they use when they run: `conveyor --help` loads none of it.

app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)

StoreOpt = Annotated[
    str | None, typer.Option("--store", help="Store URL (default: CONVEYOR_STORE or local file).")
]


def _store(url: str | None) -> Store:
    from conveyor.settings import Settings
    from conveyor.store import open_store

    settings = Settings(store=url) if url else Settings()
    return open_store(settings.store_url)


RequestsOpt = Annotated[
    int | None,
    typer.Option(min=0, help="Quota: requests a minute, across all API replicas (0: none)."),
]
JobsOpt = Annotated[
    int | None, typer.Option(min=0, help="Quota: jobs submitted a minute (0: none).")
]


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="What the key is for, e.g. ci or billing-svc.")],
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", "-s", help="read, submit, work or admin (repeatable)."),
    ] = None,
    from_env: Annotated[
        str | None,
        typer.Option(
            "--from-env",
            help="Install the key held by this environment variable instead of making one"
            " (idempotent: for deployments that keep the key in a secret).",
        ),
    ] = None,
    requests_per_minute: RequestsOpt = None,
    jobs_per_minute: JobsOpt = None,
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create a key and print it once; it is stored hashed and cannot be shown again."""
    from conveyor.api import auth

    raw = os.environ.get(from_env, "") if from_env else None
    if from_env and not raw:
        err.print(f"[red]error:[/] the environment variable {from_env} is not set")
        raise typer.Exit(2)
    opened = _store(store)
    try:
        scopes = auth.check_scopes(scope or ["read", "submit"])
        if raw:
            key_id = auth.install_key(opened, name, scopes, raw)
            err.print(f"key [bold]{key_id}[/] from {from_env} is installed ({', '.join(scopes)})")
            return
        quota = auth.Quota(requests_per_minute or None, jobs_per_minute or None)
        key_id, raw = auth.create_key(opened, name, scopes, quota)
    except ValueError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    finally:
        opened.close()
    if as_json:
        output.print_json({"id": key_id, "name": name, "scopes": scopes, "key": raw})
        return
    err.print(f"created key [bold]{key_id}[/] ({', '.join(scopes)}); store it now:")
    console.print(raw)


@app.command("list")
def list_(
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List keys (never their secrets)."""
    from rich.table import Table

    from conveyor.api import auth

    opened = _store(store)
    try:
        found = auth.list_keys(opened)
    finally:
        opened.close()
    if as_json:
        output.print_json([k.public() for k in found])
        return
    table = Table(box=None, header_style="bold")
    for column in ("ID", "NAME", "SCOPES", "QUOTA", "CREATED", "STATUS"):
        table.add_column(column)
    for k in found:
        status = f"[red]revoked {output.ago(k.revoked_at)}[/]" if k.revoked else "[green]active[/]"
        table.add_row(k.id, k.name, ",".join(sorted(k.scopes)), quota_text(k.quota),
                      output.ago(k.created_at), status)  # fmt: skip
    console.print(table)


@app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key id shown by `conveyor keys list`.")],
    store: StoreOpt = None,
) -> None:
    """Revoke a key; requests using it are refused at once."""
    from conveyor.api import auth

    opened = _store(store)
    try:
        auth.revoke_key(opened, key_id)
    except KeyError:
        err.print(f"[red]error:[/] no API key with id {key_id!r}")
        raise typer.Exit(1) from None
    finally:
        opened.close()
    console.print(f"{key_id} revoked")


def quota_text(quota: Quota | None) -> str:
    if quota is None:
        return "-"
    parts = []
    if quota.requests_per_min:
        parts.append(f"{quota.requests_per_min} req/min")
    if quota.jobs_per_min:
        parts.append(f"{quota.jobs_per_min} jobs/min")
    return ", ".join(parts)


@app.command("quota")
def quota(
    key_id: Annotated[str, typer.Argument(help="The key id shown by `conveyor keys list`.")],
    requests_per_minute: RequestsOpt = None,
    jobs_per_minute: JobsOpt = None,
    store: StoreOpt = None,
) -> None:
    """Set a key's submission quota (429 with Retry-After beyond it); applies to its next
    request on every API replica. An option left out keeps its value; 0 removes it."""
    from conveyor.api import auth

    opened = _store(store)
    try:
        current = next((k.quota for k in auth.list_keys(opened) if k.id == key_id), None)
        requests = current.requests_per_min if current else None
        jobs = current.jobs_per_min if current else None
        if requests_per_minute is not None:
            requests = requests_per_minute or None
        if jobs_per_minute is not None:
            jobs = jobs_per_minute or None
        record = auth.set_quota(opened, key_id, auth.Quota(requests, jobs))
    except KeyError:
        err.print(f"[red]error:[/] no API key with id {key_id!r}")
        raise typer.Exit(1) from None
    finally:
        opened.close()
    console.print(f"{key_id}: quota {quota_text(record.quota)}")
