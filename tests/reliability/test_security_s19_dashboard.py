"""S19 (dashboard half): every /ui route from the app's own route table, not a hand-made list.

Pass: without a session every route answers 303-to-login or 401 (never 2xx, never 5xx); with a
session but without a valid CSRF token every state-changing route answers 403; `<script>` in a
queue name, a kind name, a worker name, a tag and a job's error renders escaped on every page.

Existing: tests/dashboard/test_security.py (named pages and job actions need a session, login
and actions check CSRF, read-only keys get 403, HTML in input/result/error shown as text).
"""

from __future__ import annotations

import json
import re
import sqlite3
import types
from datetime import UTC, datetime
from urllib.parse import quote

import httpx

from conveyor.ids import uuid7
from conveyor.models import JobState, KindInfo, WorkerInfo
from conveyor.store.base import JobSpec
from tests.dashboard.conftest import Dashboard, dashboard, login  # noqa: F401 (fixture)
from tests.reliability.security_results import record

EVIL = "<script>alert(1)</script><img src=x onerror=alert(2)>"
OPEN = {("GET", "/ui/login"), ("POST", "/ui/login"), ("GET", "/ui/static/{name}")}


def _ui_routes() -> list[tuple[str, str]]:
    """Every route of every module the dashboard router includes (found, not listed)."""
    from conveyor.dashboard import routes as dashboard_routes

    found = set()
    for module in vars(dashboard_routes).values():
        if isinstance(module, types.ModuleType) and hasattr(module, "router"):
            for route in module.router.routes:
                for method in getattr(route, "methods", None) or ():
                    if method != "HEAD":
                        found.add((method, dashboard_routes.router.prefix + route.path))
    return sorted(found)


def _fill(path: str, job_id: str) -> str:
    values = {"job_id": job_id, "name": "noop", "direction": "in", "worker_id": "w1"}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x"), path)


def test_every_ui_route_needs_a_session_and_a_csrf_token(dashboard: Dashboard) -> None:  # noqa: F811
    routes = _ui_routes()
    assert len(routes) >= 20, routes
    job_id = dashboard.submit("noop", queue="s19-held", delay_s=3600)
    failures: list[str] = []
    cases = 0
    with httpx.Client(base_url=dashboard.url, timeout=30) as anonymous:
        for method, path in routes:
            if (method, path) in OPEN:
                continue
            cases += 1
            r = anonymous.request(method, _fill(path, job_id), data={"csrf": "0" * 32})
            to_login = r.status_code == 303 and r.headers["location"].startswith("/ui/login")
            if not (to_login or r.status_code == 401):
                failures.append(f"anonymous {method} {path}: {r.status_code}")
    posts = [(m, p) for m, p in routes if m == "POST" and (m, p) not in OPEN]
    with httpx.Client(base_url=dashboard.url, timeout=30) as signed_in:
        login(signed_in, dashboard.admin_key)
        for method, path in posts:
            for data in ({}, {"csrf": "0" * 32}):
                cases += 1
                r = signed_in.request(method, _fill(path, job_id), data=data)
                if r.status_code != 403:
                    failures.append(f"{method} {path} csrf={data}: {r.status_code}")
    assert dashboard.wait_state(job_id, JobState.SCHEDULED, JobState.QUEUED)
    record("S19 dashboard auth+CSRF", cases, len(failures),
           f"{len(routes)} /ui routes from the route table: anonymous -> 303 login/401; "
           f"{len(posts)} POST routes with a session but no/wrong CSRF -> 403")  # fmt: skip
    assert not failures, "\n".join(failures)


def _worker(worker_id: str, state: str = "running") -> WorkerInfo:
    now = datetime.now(UTC)
    return WorkerInfo.model_construct(id=worker_id, host=EVIL, pid=1, queues=[EVIL],
                                      concurrency=1, running=[], state=state, started_at=now,
                                      last_seen=now)  # fmt: skip


def _forget(dashboard: Dashboard, job_ids: list[str], worker_ids: list[str],  # noqa: F811
            kinds: list[str]) -> None:  # fmt: skip
    """Remove the planted rows: the dashboard server is shared with tests/dashboard."""
    store = dashboard.store()
    try:
        for job_id in job_ids:
            store.cancel(job_id)
            store.delete(job_id)
        for worker_id in worker_ids:
            store.worker_beat(_worker(worker_id, "stopped"))
    finally:
        store.close()
    db = dashboard.store_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        conn.executemany("DELETE FROM kinds WHERE name = ?", [(k,) for k in kinds])


def _pages(job_id: str, kind: str) -> list[str]:
    return ["/ui/", "/ui/overview/live", "/ui/jobs", f"/ui/jobs?queue={quote(EVIL)}",
            f"/ui/jobs?kind={quote(EVIL)}", f"/ui/jobs?tag={quote(EVIL)}", "/ui/kinds",
            f"/ui/kinds/{quote(kind, safe='')}", "/ui/workers", f"/ui/jobs/{job_id}",
            f"/ui/jobs/{job_id}/live", f"/ui/jobs?q={quote(EVIL)}"]  # fmt: skip


def _check(dashboard: Dashboard, pages: list[str], shown: list[str] | None = None  # noqa: F811
           ) -> list[str]:  # fmt: skip
    """Failures on `pages`; appends to `shown` the pages where the escaped markup appears."""
    failures = []
    with httpx.Client(base_url=dashboard.url, timeout=30) as client:
        login(client, dashboard.admin_key)
        for path in pages:
            try:
                r = client.get(path)
            except httpx.TransportError as exc:  # the server dropped the connection
                failures.append(f"{path}: {exc!r}")
                continue
            if r.status_code >= 500:
                failures.append(f"{path}: {r.status_code}")
            if "<script>alert(1)" in r.text or "<img src=x" in r.text:
                failures.append(f"{path}: unescaped markup")
            if shown is not None and "&lt;script&gt;alert(1)" in r.text:
                shown.append(path)
    return failures


def test_script_in_names_renders_escaped_everywhere(dashboard: Dashboard) -> None:  # noqa: F811
    """Markup where the models allow free text: queue names, tags, input, a kind's
    description, worker ids and hosts (planted as rows), and query parameters."""
    kind, worker_id = "s19.evil", f"s19-{EVIL}"
    store = dashboard.store()
    try:
        store.register_kinds([KindInfo(name=kind, queue=EVIL, description=EVIL)])
        (job,) = store.enqueue([JobSpec(id=uuid7(), kind=kind, queue=EVIL, input={"x": EVIL},
                                        run_at=store.now(), tags=[EVIL])])  # fmt: skip
        store.worker_beat(_worker(worker_id))
    finally:
        store.close()
    pages = _pages(job.id, kind)
    shown: list[str] = []
    try:
        failures = _check(dashboard, pages, shown)
    finally:
        _forget(dashboard, [job.id], [worker_id], [kind])
    record("S19 dashboard escaping", len(pages), len(failures),
           "<script>/<img onerror> in queue, tag, input, kind description, worker id/host "
           f"and query parameters on {len(pages)} pages ({len(shown)} show it, escaped): "
           f"{len(failures)} unescaped or 5xx")  # fmt: skip
    assert not failures, failures
    assert len(shown) >= 4, shown  # the markup really reached the pages


def test_a_tampered_kind_row_does_not_break_the_pages(dashboard: Dashboard) -> None:  # noqa: F811
    db = dashboard.store_url.removeprefix("sqlite:///")
    info = json.dumps({"name": EVIL, "description": EVIL})
    with sqlite3.connect(db) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(kinds)")]
        values = {"name": EVIL, "info": info, "updated_at": 0.0}
        conn.execute(f"INSERT INTO kinds ({', '.join(columns)}) VALUES "
                     f"({', '.join('?' for _ in columns)})",
                     [values.get(c) for c in columns])  # fmt: skip
    pages = ["/ui/", "/ui/jobs", "/ui/kinds"]
    try:
        failures = _check(dashboard, pages)
    finally:
        _forget(dashboard, [], [], [EVIL])
    record("S19 dashboard tampered kind row", len(pages), len(failures),
           "a kinds row whose name fails validation, planted in SQLite: "
           + ("; ".join(failures) or "pages render"))  # fmt: skip
    assert not failures, failures
