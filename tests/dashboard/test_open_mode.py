"""Without any API key, on loopback, the dashboard is open, but forms still need CSRF."""

from __future__ import annotations

from pathlib import Path

import httpx

from conveyor.api.app import create_app
from conveyor.kinds.registry import import_kinds
from conveyor.models import JobState, KindInfo, NewJob
from conveyor.service import Service
from conveyor.settings import Settings
from conveyor.storage import open_storage
from conveyor.store import open_store
from tests.dashboard.conftest import csrf_of
from tests.servers.http import serve_in_thread


def test_open_on_loopback_without_keys(tmp_path: Path) -> None:
    store = open_store("memory://")
    store.register_kinds(import_kinds(["conveyor.kinds.demo"]).infos())
    settings = Settings(home=tmp_path, storage=f"file://{tmp_path / 'files'}")
    job = Service(store, open_storage(settings.storage_url)).submit(NewJob(kind="noop"))
    with (
        serve_in_thread(create_app(settings, store=store)) as url,
        httpx.Client(base_url=url) as ui,
    ):
        page = ui.get("/ui/")
        assert page.status_code == 200
        assert "Sign out" not in page.text
        listed = ui.get("/ui/jobs")
        assert job.id in listed.text
        # No worker runs here: the job's page says so instead of leaving it silently queued.
        shown = ui.get(f"/ui/jobs/{job.id}").text
        assert 'id="unserved"' in shown and "no live worker serves kind" in shown
        token = csrf_of(listed.text)
        assert ui.post(f"/ui/jobs/{job.id}/cancel").status_code == 403
        assert store.get(job.id).state is JobState.QUEUED
        assert ui.post(f"/ui/jobs/{job.id}/cancel", data={"csrf": token}).status_code == 303
        assert store.get(job.id).state is JobState.CANCELLED
        # Another site cannot borrow the visitor's session: no token, or a foreign origin.
        with httpx.Client(base_url=url) as stranger:
            assert stranger.post(f"/ui/jobs/{job.id}/retry").status_code == 403
        foreign = ui.post(f"/ui/jobs/{job.id}/retry", data={"csrf": token},
                          headers={"Origin": "http://evil.example"})  # fmt: skip
        assert foreign.status_code == 403
        assert store.get(job.id).state is JobState.CANCELLED


def test_form_with_a_file_input_stages_the_file_into_the_job(tmp_path: Path) -> None:
    store = open_store("memory://")
    schema = {
        "type": "object",
        "properties": {
            "document": {"type": "string", "format": "file", "description": "A PDF."},
            "copies": {"type": "integer", "minimum": 1, "default": 1},
            "mode": {"enum": ["fast", "best"], "default": "fast"},
        },
        "required": ["document"],
    }
    store.register_kinds([KindInfo(name="print", input_schema=schema)])
    settings = Settings(home=tmp_path, storage=f"file://{tmp_path / 'files'}")
    storage = open_storage(settings.storage_url)
    with (
        serve_in_thread(create_app(settings, store=store)) as url,
        httpx.Client(base_url=url) as ui,
    ):
        form = ui.get("/ui/kinds/print")
        assert 'type="file"' in form.text
        token = csrf_of(form.text)
        missing = ui.post("/ui/kinds/print", data={"csrf": token, "copies": "2"},
                          files={"x": ("", b"")})  # fmt: skip
        assert missing.status_code == 422
        assert "choose a file" in missing.text
        answer = ui.post(
            "/ui/kinds/print", data={"csrf": token, "copies": "2", "mode": "best"},
            files={"document": ("report.pdf", b"%PDF-1.4 fake", "application/pdf")},
        )  # fmt: skip
        assert answer.status_code == 303
        job_id = answer.headers["location"].rsplit("/", 1)[1]
        job = store.get(job_id)
        assert job.input == {"document": "report.pdf", "copies": 2, "mode": "best"}
        assert b"".join(storage.read(f"jobs/{job_id}/in/report.pdf")) == b"%PDF-1.4 fake"
        page = ui.get(f"/ui/jobs/{job_id}").text
        assert f"/ui/jobs/{job_id}/files/in/report.pdf" in page
        assert "<iframe" in page  # a PDF preview
        # Finished jobs can be deleted from their page (open mode acts as admin).
        store.cancel(job_id)
        gone = ui.post(f"/ui/jobs/{job_id}/delete", data={"csrf": token})
        assert gone.headers["location"] == "/ui/jobs"
        assert ui.get(f"/ui/jobs/{job_id}").status_code == 404


def test_webhook_deliveries_are_listed_without_secrets(tmp_path: Path) -> None:
    store = open_store("memory://")
    store.register_kinds(import_kinds(["conveyor.kinds.demo"]).infos())
    settings = Settings(home=tmp_path, storage=f"file://{tmp_path / 'files'}")
    job = Service(store, open_storage(settings.storage_url)).submit(NewJob(kind="noop"))
    hook = "https://user:hunter2@hooks.example/in?token=s3cret"
    store.put_record(
        "webhook_deliveries", f"{job.id}/000000000001-0",
        {"event": "job.succeeded", "url": hook, "status": "failed", "attempt_count": 2,
         "secret_id": "whsec_id", "body": {"data": "x"},
         "attempts": [{"at": 1.0, "status_code": 500, "error": None, "duration_ms": 12.5}]},
    )  # fmt: skip
    with (
        serve_in_thread(create_app(settings, store=store)) as url,
        httpx.Client(base_url=url) as ui,
    ):
        page = ui.get(f"/ui/jobs/{job.id}").text
    assert "job.succeeded" in page
    assert "https://hooks.example/in?…" in page
    assert "hunter2" not in page
    assert "s3cret" not in page
    assert "whsec_id" not in page


def test_failed_is_a_link_and_a_filter_can_be_retried_whole(tmp_path: Path) -> None:
    """From the overview one click lists the failed jobs; one more retries every failed or
    cancelled job of a filter, on every page, not only the rows ticked on this one."""
    store = open_store("memory://")
    store.register_kinds(import_kinds(["conveyor.kinds.demo"]).infos())
    settings = Settings(home=tmp_path, storage=f"file://{tmp_path / 'files'}")
    service = Service(store, open_storage(settings.storage_url))
    tagged = [service.submit(NewJob(kind="noop", tags=["batch-7"])).id for _ in range(60)]
    other = service.submit(NewJob(kind="noop")).id
    for job_id in [*tagged, other]:
        service.cancel(job_id)
    with (
        serve_in_thread(create_app(settings, store=store)) as url,
        httpx.Client(base_url=url) as ui,
    ):
        overview = ui.get("/ui/").text
        assert 'href="/ui/jobs?state=failed" id="failed-jobs"' in overview
        listed = ui.get("/ui/jobs", params={"tag": "batch-7", "state": "cancelled"})
        assert 'id="retry-matching"' in listed.text
        done = ui.post("/ui/jobs/bulk", data={
            "csrf": csrf_of(listed.text), "action": "retry-matching",
            "back": "state=cancelled&tag=batch-7",
        })  # fmt: skip
        assert done.status_code == 303
        assert "done=retry:60:0" in done.headers["location"]
    assert {store.get(j).state for j in tagged} == {JobState.QUEUED}  # 60: more than a page
    assert store.get(other).state is JobState.CANCELLED
