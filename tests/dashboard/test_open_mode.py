"""Without any API key, on loopback, the dashboard is open, but forms still need CSRF."""

from __future__ import annotations

from pathlib import Path

import httpx

from conveyor.api.app import create_app
from conveyor.kinds.registry import import_kinds
from conveyor.models import JobState, NewJob
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
