"""Sign in with an API key, sign out."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from conveyor.api.auth import authenticator, verify_key
from conveyor.dashboard import render
from conveyor.dashboard.session import COOKIE, login_context, new_session
from conveyor.dashboard.web import DashboardRoute, ViewerDep, posted, see_other

router = APIRouter(route_class=DashboardRoute)


def safe_next(target: str | None) -> str:
    """Only dashboard paths: never an open redirect to another site."""
    if target and target.startswith("/ui") and not target.startswith("/ui//"):
        return target
    return "/ui/"


@router.get("/login", include_in_schema=False)
async def login_page(request: Request, next: str | None = None) -> Response:
    viewer, csrf = await login_context(request)
    if viewer is not None and viewer.signed_in:
        return see_other(safe_next(next))
    return render.page(
        request,
        "login.html",
        csrf=csrf,
        next=safe_next(next),
        error=None,
        open_mode=viewer is not None,
    )


@router.post("/login", include_in_schema=False)
async def login(request: Request) -> Response:
    form = await posted(request)
    raw = str(form.get("key", "")).strip()
    target = safe_next(str(form.get("next", "")))
    auth = authenticator(request)
    client = request.client.host if request.client else "?"
    error = None
    if auth.limiter.blocked_for(client) > 0:
        error, status = "Too many wrong keys from this address; wait a minute and retry.", 429
    else:
        record = await run_in_threadpool(verify_key, auth.store, raw)
        if record is not None:
            new_session(request, record.id)
            return see_other(target)
        auth.limiter.fail(client)
        error, status = "That key is not valid (or was revoked).", 401
    _, csrf = await login_context(request)
    return render.page(
        request, "login.html", status, csrf=csrf, next=target, error=error, open_mode=False
    )


@router.post("/logout", include_in_schema=False)
async def logout(request: Request, viewer: ViewerDep) -> Response:
    await posted(request)
    response = see_other("/ui/login")
    response.delete_cookie(COOKIE, path="/ui")
    return response
