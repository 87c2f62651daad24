"""Dashboard security over plain HTTP against the real server: sessions, CSRF, scopes,
escaping, cookies, redirects."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from conveyor.api.auth import create_key, revoke_key
from conveyor.models import JobState, WorkerInfo
from tests.dashboard.conftest import Dashboard, csrf_of, login

PAGES = ["/ui/", "/ui/overview/live", "/ui/jobs", "/ui/kinds", "/ui/kinds/demo.count",
         "/ui/workers"]  # fmt: skip


@pytest.mark.parametrize("path", PAGES)
def test_pages_need_a_session_when_keys_exist(client: httpx.Client, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/ui/login?next=")


def test_job_pages_and_actions_need_a_session(client: httpx.Client, dashboard: Dashboard
                                              ) -> None:  # fmt: skip
    job_id = dashboard.submit("noop", queue="held")
    for path in (f"/ui/jobs/{job_id}", f"/ui/jobs/{job_id}/live", f"/ui/jobs/{job_id}/stream",
                 f"/ui/jobs/{job_id}/files/out/x.txt"):  # fmt: skip
        assert client.get(path).status_code == 303, path
    for action in ("cancel", "retry", "delete"):
        answer = client.post(f"/ui/jobs/{job_id}/{action}", data={"csrf": "x"})
        assert answer.status_code == 401
    answer = client.post("/ui/jobs/bulk", data={"action": "cancel", "ids": [job_id]})
    assert answer.status_code == 401
    answer = client.post("/ui/kinds/noop", data={"csrf": "x"})
    assert answer.status_code == 401
    assert dashboard.wait_state(job_id, JobState.QUEUED).state is JobState.QUEUED
    # htmx polls are told to go to the login page instead of swapping an error in.
    polled = client.get("/ui/jobs", headers={"HX-Request": "true"})
    assert polled.headers["HX-Redirect"].startswith("/ui/login")


def test_login_rejects_a_wrong_key(client: httpx.Client) -> None:
    token = csrf_of(client.get("/ui/login").text)
    answer = client.post("/ui/login", data={"key": "cvk_nope_nope", "csrf": token})
    assert answer.status_code == 401
    assert "not valid" in answer.text
    assert client.get("/ui/jobs").status_code == 303


def test_login_needs_its_csrf_token(client: httpx.Client, dashboard: Dashboard) -> None:
    client.get("/ui/login")
    answer = client.post("/ui/login", data={"key": dashboard.admin_key, "csrf": "0" * 64})
    assert answer.status_code == 403
    assert client.get("/ui/jobs").status_code == 303


def test_session_cookie_is_http_only_same_site_and_holds_no_key(
    client: httpx.Client, dashboard: Dashboard
) -> None:
    token = csrf_of(client.get("/ui/login").text)
    answer = client.post("/ui/login", data={"key": dashboard.admin_key, "csrf": token})
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/ui" in cookie
    secret = dashboard.admin_key.rsplit("_", 1)[1]
    assert secret not in cookie
    for path in ("/ui/", "/ui/jobs", "/ui/kinds/demo.count", "/ui/workers"):
        assert secret not in client.get(path).text


def test_login_never_redirects_off_site(client: httpx.Client, dashboard: Dashboard) -> None:
    token = csrf_of(client.get("/ui/login").text)
    answer = client.post("/ui/login", data={"key": dashboard.admin_key, "csrf": token,
                                            "next": "https://evil.example/"})  # fmt: skip
    assert answer.headers["location"] == "/ui/"


def test_actions_check_the_csrf_token(client: httpx.Client, dashboard: Dashboard) -> None:
    token = login(client, dashboard.admin_key)
    job_id = dashboard.submit("noop", queue="held")
    assert client.post(f"/ui/jobs/{job_id}/cancel").status_code == 403
    assert client.post(f"/ui/jobs/{job_id}/cancel", data={"csrf": "f" * 64}).status_code == 403
    assert dashboard.wait_state(job_id, JobState.QUEUED).state is JobState.QUEUED
    foreign = client.post(f"/ui/jobs/{job_id}/cancel", data={"csrf": token},
                          headers={"Origin": "https://evil.example"})  # fmt: skip
    assert foreign.status_code == 403
    assert dashboard.wait_state(job_id, JobState.QUEUED).state is JobState.QUEUED
    done = client.post(f"/ui/jobs/{job_id}/cancel", data={"csrf": token})
    assert done.status_code == 303
    assert dashboard.wait_state(job_id, JobState.CANCELLED).state is JobState.CANCELLED
    # htmx sends the token as a header instead of a form field.
    retried = client.post(f"/ui/jobs/{job_id}/retry", headers={"X-CSRF-Token": token})
    assert retried.status_code == 303


def test_read_only_key_gets_403_on_every_action(client: httpx.Client, dashboard: Dashboard
                                                ) -> None:  # fmt: skip
    token = login(client, dashboard.read_key)
    job_id = dashboard.submit("noop", queue="held")
    page = client.get(f"/ui/jobs/{job_id}").text
    assert 'id="cancel"' not in page
    for action in ("cancel", "retry", "delete"):
        assert client.post(f"/ui/jobs/{job_id}/{action}", data={"csrf": token}).status_code == 403
    bulk = client.post("/ui/jobs/bulk", data={"csrf": token, "action": "cancel", "ids": job_id})
    assert bulk.status_code == 403
    submit = client.post("/ui/kinds/noop", data={"csrf": token})
    assert submit.status_code == 403
    assert client.post("/ui/workers/anything/drain", data={"csrf": token}).status_code == 403
    assert dashboard.wait_state(job_id, JobState.QUEUED).state is JobState.QUEUED


def test_revoking_the_key_ends_its_sessions(client: httpx.Client, dashboard: Dashboard) -> None:
    store = dashboard.store()
    try:
        key_id, raw = create_key(store, "short-lived", ["read"])
        login(client, raw)
        assert client.get("/ui/jobs").status_code == 200
        revoke_key(store, key_id)
    finally:
        store.close()
    assert client.get("/ui/jobs").status_code == 303


def test_tampered_cookie_is_refused(client: httpx.Client, dashboard: Dashboard) -> None:
    login(client, dashboard.admin_key)
    value = client.cookies["conveyor_session"]
    body, mac = value.split(".")
    client.cookies.set("conveyor_session", body[:-2] + "AA." + mac, path="/ui")
    assert client.get("/ui/jobs").status_code == 303


def test_html_in_input_result_and_error_is_shown_as_text(
    client: httpx.Client, dashboard: Dashboard
) -> None:
    evil = "<script>alert('x')</script><img src=x onerror=alert(1)>"
    job_id = dashboard.submit("demo.fail", {"message": evil, "permanent": True}, tags=[evil])
    dashboard.wait_state(job_id, JobState.FAILED)
    login(client, dashboard.admin_key)
    for path in (f"/ui/jobs/{job_id}", f"/ui/jobs/{job_id}/live", "/ui/jobs"):
        html = client.get(path).text
        assert "<script>alert" not in html, path
        assert "<img src=x" not in html, path
        assert "&lt;script&gt;alert(" in html, path
    page = client.get(f"/ui/jobs/{job_id}")
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_downloads_are_attachments_and_previews_sandboxed(
    client: httpx.Client, dashboard: Dashboard
) -> None:
    job_id = dashboard.submit("demo.count", {"to": 3, "delay": 0, "write_file": True})
    dashboard.wait_state(job_id, JobState.SUCCEEDED)
    login(client, dashboard.admin_key)
    answer = client.get(f"/ui/jobs/{job_id}/files/out/numbers.txt?inline=1")
    assert answer.status_code == 200
    assert answer.text == "1\n2\n3"
    assert answer.headers["content-disposition"].startswith("attachment")
    assert answer.headers["content-type"] == "application/octet-stream"
    assert "sandbox" in answer.headers["content-security-policy"]
    assert client.get(f"/ui/jobs/{job_id}/files/out/..%2Fx").status_code in (400, 404)
    assert client.get(f"/ui/jobs/{job_id}/files/out/missing.txt").status_code == 404


def test_bad_input_gives_a_page_not_a_500(client: httpx.Client, dashboard: Dashboard) -> None:
    login(client, dashboard.admin_key)
    assert client.get("/ui/jobs?state=bogus").status_code == 422
    assert client.get("/ui/jobs?since=yesterday").status_code == 422
    assert client.get("/ui/jobs/not-a-job").status_code == 404
    assert client.get("/ui/kinds/no.such.kind").status_code == 404
    assert client.get("/ui/static/../session.py").status_code == 404


def test_drain_writes_the_worker_command_record(client: httpx.Client, dashboard: Dashboard
                                               ) -> None:  # fmt: skip
    token = login(client, dashboard.admin_key)
    store = dashboard.store()
    now = datetime.now(UTC)
    try:  # a worker record of our own, so the session's real worker keeps serving
        store.worker_beat(WorkerInfo(id="testhost:1:drainme", host="testhost", pid=1,
                                     queues=["nowhere"], concurrency=1, started_at=now,
                                     last_seen=now))  # fmt: skip
        assert client.post("/ui/workers/nobody/drain", data={"csrf": token}).status_code == 404
        answer = client.post("/ui/workers/testhost:1:drainme/drain", data={"csrf": token})
        assert answer.status_code == 303
        record = store.get_record("worker_commands", "testhost:1:drainme")
        assert record is not None
        assert (record["command"], record["by"]) == ("drain", "admin")
        assert "drain requested" in client.get("/ui/workers").text
    finally:
        store.worker_beat(WorkerInfo(id="testhost:1:drainme", host="testhost", pid=1,
                                     queues=["nowhere"], concurrency=1, state="stopped",
                                     started_at=now, last_seen=now))  # fmt: skip
        store.close()
