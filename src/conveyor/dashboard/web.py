"""What every dashboard route shares: the route class that turns errors into pages and sets
the session cookie, the viewer and service dependencies, and reading posted forms safely."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from starlette.datastructures import FormData

from conveyor import errors
from conveyor.api.deps import ServiceDep
from conveyor.dashboard import render
from conveyor.dashboard.session import (
    COOKIE,
    CSRF_FIELD,
    MAX_AGE_S,
    Forbidden,
    LoginRequired,
    Viewer,
    check_csrf,
    current_viewer,
)

log = logging.getLogger("conveyor.dashboard")

ViewerDep = Annotated[Viewer, Depends(current_viewer)]
__all__ = ["DashboardRoute", "ServiceDep", "ViewerDep", "posted", "see_other"]


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    url = f"/ui/login?next={quote(target, safe='')}"
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": url})
    if request.method == "GET":
        return see_other(url)
    return render.page(
        request, "error.html", 401, status=401, message="Your session has ended. Sign in again."
    )


def _error(request: Request, status: int, message: str) -> Response:
    return render.page(request, "error.html", status, status=status, message=message)


class DashboardRoute(APIRoute):
    """Errors become HTML pages (not problem+json), and a new session cookie is set."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def wrapped(request: Request) -> Response:
            try:
                response = await handler(request)
            except LoginRequired:
                response = _to_login(request)
            except Forbidden as exc:
                response = _error(request, 403, exc.message)
            except errors.ConveyorError as exc:
                response = _error(request, exc.status if exc.status < 500 else 503, exc.message)
            except RequestValidationError as exc:
                where = "; ".join(
                    f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}"
                    for e in exc.errors()
                )
                response = _error(request, 422, f"the request is invalid: {where}")
            except HTTPException as exc:
                response = _error(request, exc.status_code, str(exc.detail))
            cookie = getattr(request.state, "set_session", None)
            if cookie is not None:
                response.set_cookie(
                    COOKIE,
                    cookie,
                    max_age=MAX_AGE_S,
                    path="/ui",
                    httponly=True,
                    samesite="lax",
                    secure=request.url.scheme == "https",
                )
            return response

        return wrapped


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


async def posted(
    request: Request, viewer: Viewer | None = None, scope: str | None = None
) -> FormData:
    """The posted form, after checking its origin, its CSRF token and the viewer's scope."""
    if not _same_origin(request):
        raise Forbidden("cross-site form posts are refused")
    form = await request.form()
    token = form.get(CSRF_FIELD)
    check_csrf(request, token if isinstance(token, str) else None)
    if viewer is not None and scope is not None and not viewer.can(scope):
        raise Forbidden(f"your API key {viewer.principal.name!r} lacks the {scope!r} scope")
    return form
