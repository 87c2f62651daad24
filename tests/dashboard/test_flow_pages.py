"""The dashboard's Queues and Schedules pages over a real `conveyor up`: pause, resume and
purge (confirmed) a queue, set and remove limits, create, pause and delete a schedule, the
waiting reason on a held-back job; a read-only viewer sees no controls and cannot post."""

from __future__ import annotations

import httpx

from conveyor.models import JobState
from tests.dashboard.conftest import Dashboard, csrf_of, login

QUEUE = "dashq"  # no worker of `conveyor up` serves it: its jobs stay waiting


def test_pause_resume_and_purge_a_queue(dashboard: Dashboard, client: httpx.Client) -> None:
    csrf = login(client, dashboard.admin_key)
    job = dashboard.submit("noop", queue=QUEUE)
    page = client.get("/ui/queues")
    assert page.status_code == 200 and f'id="queue-{QUEUE}"' in page.text
    assert client.post(f"/ui/queues/{QUEUE}/pause", data={"csrf": csrf}).status_code == 303
    assert 'class="badge paused"' in client.get("/ui/queues").text
    assert "waiting: queue paused" in client.get(f"/ui/jobs/{job}").text
    assert client.post(f"/ui/queues/{QUEUE}/resume", data={"csrf": csrf}).status_code == 303
    assert "waiting: queue paused" not in client.get(f"/ui/jobs/{job}").text
    unconfirmed = client.post(f"/ui/queues/{QUEUE}/purge", data={"csrf": csrf, "confirm": "x"})
    assert unconfirmed.status_code == 422 and "to confirm the purge" in unconfirmed.text
    assert dashboard.wait_state(job, JobState.QUEUED, timeout=1).state is JobState.QUEUED
    done = client.post(f"/ui/queues/{QUEUE}/purge", data={"csrf": csrf, "confirm": QUEUE})
    assert done.status_code == 303
    purged = dashboard.wait_state(job, JobState.CANCELLED, timeout=5)
    assert purged.error is not None and purged.error.reason == "purged"


def test_set_and_remove_a_limit(dashboard: Dashboard, client: httpx.Client) -> None:
    csrf = login(client, dashboard.admin_key)
    form = {"csrf": csrf, "target": f"queue:{QUEUE}", "max_running": "4", "rate": "30",
            "per_s": "60", "strategy": "queue"}  # fmt: skip
    assert client.post("/ui/limits", data=form).status_code == 303
    page = client.get("/ui/queues").text
    assert f'id="limit-queue:{QUEUE}"' in page and "30 per 1 min" in page and "(admin)" in page
    bad = client.post("/ui/limits", data={**form, "max_running": "", "rate": ""})
    assert bad.status_code == 422 and "max_running, rate or both" in bad.text
    keyed = {**form, "target": "key:noop", "rate": "", "strategy": "cancel_newest"}
    assert client.post("/ui/limits", data=keyed).status_code == 303
    assert 'id="limit-key:noop"' in client.get("/ui/queues").text
    client.post("/ui/limits/key:noop/delete", data={"csrf": csrf})
    gone = client.post(f"/ui/limits/queue:{QUEUE}/delete", data={"csrf": csrf})
    assert gone.status_code == 303
    assert f'id="limit-queue:{QUEUE}"' not in client.get("/ui/queues").text


def test_create_pause_and_delete_a_schedule(dashboard: Dashboard, client: httpx.Client) -> None:
    csrf = login(client, dashboard.admin_key)
    form = {"csrf": csrf, "id": "dash-nightly", "kind": "noop", "cron": "30 2 * * *",
            "timezone": "Europe/Zurich", "every_s": "", "input": "{}", "misfire": "skip",
            "overlap": "forbid"}  # fmt: skip
    made = client.post("/ui/schedules", data=form)
    assert made.status_code == 303 and made.headers["location"] == "/ui/schedules/dash-nightly"
    page = client.get("/ui/schedules/dash-nightly").text
    assert "At 02:30 every day" in page
    assert page.count("<li><time") == 10 and ("02:30 CET" in page or "02:30 CEST" in page)
    assert "dash-nightly" in client.get("/ui/schedules").text
    bad = client.post("/ui/schedules", data={**form, "id": "dash-bad", "cron": "99 * * * *"})
    assert bad.status_code == 422 and "invalid cron expression" in bad.text
    taken = client.post("/ui/schedules", data=form)
    assert taken.status_code == 422 and "already exists" in taken.text
    client.post("/ui/schedules/dash-nightly/pause", data={"csrf": csrf})
    assert 'id="schedule-state">paused' in client.get("/ui/schedules/dash-nightly").text
    client.post("/ui/schedules/dash-nightly/delete", data={"csrf": csrf})
    assert client.get("/ui/schedules/dash-nightly").status_code == 404


def test_a_read_only_viewer_sees_no_controls(dashboard: Dashboard, client: httpx.Client) -> None:
    login(client, dashboard.read_key)
    queues = client.get("/ui/queues")
    assert queues.status_code == 200
    assert "/pause" not in queues.text and 'action="/ui/limits"' not in queues.text
    assert 'action="/ui/schedules"' not in client.get("/ui/schedules").text
    csrf = csrf_of(client.get("/ui/jobs").text)
    refused = client.post(f"/ui/queues/{QUEUE}/pause", data={"csrf": csrf})
    assert refused.status_code == 403
