"""Kinds: each registered kind with its schemas, and a submit form generated from its input
JSON Schema that lands on the new job's page."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from conveyor import errors
from conveyor.api import staging
from conveyor.dashboard import forms, render
from conveyor.dashboard.web import DashboardRoute, ServiceDep, ViewerDep, posted, see_other
from conveyor.models import Job, KindInfo, NewJob
from conveyor.service import Service
from conveyor.storage import check_name

router = APIRouter(route_class=DashboardRoute)

CHUNK = 1 << 20


@router.get("/kinds", include_in_schema=False)
async def kinds_page(request: Request, viewer: ViewerDep, service: ServiceDep) -> Response:
    found = await run_in_threadpool(service.kinds, True)
    return render.page(request, "kinds.html", kinds=sorted(found.values(), key=lambda k: k.name))


def _form_page(
    request: Request,
    kind: KindInfo,
    values: dict[str, str],
    problems: dict[str, str],
    general: list[str],
    options: dict[str, str],
    status: int = 200,
) -> Response:
    return render.page(
        request,
        "kind.html",
        status,
        kind=kind,
        fields=forms.fields(kind.input_schema),
        values=values,
        problems=problems,
        general=general,
        options=options,
        submitted=bool(values or problems or general),
    )


@router.get("/kinds/{name}", include_in_schema=False)
async def kind_page(
    request: Request, name: str, viewer: ViewerDep, service: ServiceDep
) -> Response:
    kind = await run_in_threadpool(service.kind, name)
    return _form_page(request, kind, {}, {}, [], {"tags": "", "priority": "0"})


def _uploads(form: FormData, fields: list[forms.Field]) -> dict[str, UploadFile]:
    found = {}
    for f in fields:
        value = form.get(f.name)
        if f.widget == "file" and isinstance(value, UploadFile) and value.filename:
            found[f.name] = value
    return found


def _options(form: FormData) -> tuple[dict[str, str], dict[str, Any], dict[str, str]]:
    """The job options under the input fields: (as sent, for NewJob, errors)."""
    sent = {k: str(form.get(f"_{k}", "")).strip() for k in ("tags", "priority")}
    problems: dict[str, str] = {}
    tags = [t.strip() for t in sent["tags"].split(",") if t.strip()]
    priority = 0
    try:
        priority = int(sent["priority"] or 0)
        if not -1000 <= priority <= 1000:
            raise ValueError
    except ValueError:
        problems["_priority"] = "a whole number from -1000 to 1000"
    return sent, {"tags": tags, "priority": priority}, problems


def _submit(service: Service, new: NewJob, uploads: dict[str, UploadFile], limit: int) -> Job:
    """Submit; input files are staged first and moved in before any worker can claim the job."""
    if not uploads:
        return service.submit(new)
    staged = {}
    for upload in uploads.values():
        name = check_name(upload.filename or "")
        chunks = iter(partial(upload.file.read, CHUNK), b"")
        staged[name] = staging.stage(service, name, chunks, limit)
    jobs, _ = staging.submit_with_files(service, [new], [staged])
    return jobs[0]


@router.post("/kinds/{name}", include_in_schema=False)
async def submit(request: Request, name: str, viewer: ViewerDep, service: ServiceDep) -> Response:
    form = await posted(request, viewer, "submit")
    try:
        return await _submit_form(request, form, name, service)
    finally:
        await form.close()  # uploaded files are spooled to temp files


async def _submit_form(request: Request, form: FormData, name: str, service: Service) -> Response:
    """Read the generated form back; on any problem show it again with the errors (422)."""
    kind = await run_in_threadpool(service.kind, name)
    fields = forms.fields(kind.input_schema)
    values = {k: v for k, v in form.items() if isinstance(v, str) and not k.startswith("_")}
    values.pop("csrf", None)
    uploads = _uploads(form, fields)
    data, problems = forms.read(fields, values, {k: u.filename or "" for k, u in uploads.items()})
    sent, options, option_problems = _options(form)
    problems.update(option_problems)
    general: list[str] = []
    for key, upload in uploads.items():
        try:
            check_name(upload.filename or "")
        except errors.FileError as exc:
            problems[key] = exc.message
    if not problems:
        try:
            await run_in_threadpool(service.validate, kind, data)
            new = NewJob(kind=kind.name, input=data, **options)
            limit = request.app.state.settings.max_upload_bytes
            job = await run_in_threadpool(_submit, service, new, uploads, limit)
            return see_other(f"/ui/jobs/{job.id}")
        except errors.InvalidInputError as exc:
            by_field, general = forms.schema_errors(exc.details.get("errors", []))
            problems.update(by_field)
            general = general or ([] if by_field else [exc.message])
        except ValueError as exc:  # NewJob's own checks (tags too long, ...)
            general = [str(exc).splitlines()[0]]
    return _form_page(request, kind, values, problems, general, sent, 422)
