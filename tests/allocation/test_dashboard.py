"""The dashboard's allocation page: upload CSVs, follow the job, see and download the result."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import httpx

from conveyor.api.app import create_app
from conveyor.settings import Settings
from conveyor.store import open_store
from tests.dashboard.conftest import csrf_of
from tests.integration.harness import start_worker, stop, worker_env
from tests.servers.http import serve_in_thread

PREF = "name,P1,N1,P2,N2\n1,10,1,11,2\n2,10,1,11,2\n3,12,1,10,2\n4,10,1,12,2\n"
PROJ = "PID,SUP\n10,smith\n11,smith\n12,jones\n"


def test_upload_watch_and_download(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store_url = f"sqlite:///{tmp_path / 'c.db'}"
    settings = Settings(home=home, store=store_url, storage=f"file://{home / 'files'}")
    store = open_store(store_url)
    with serve_in_thread(create_app(settings)) as url, httpx.Client(base_url=url) as ui:
        page = ui.get("/ui/allocation")
        assert page.status_code == 200 and 'id="allocation-form"' in page.text
        token = csrf_of(page.text)
        bad = ui.post(
            "/ui/allocation",
            data={"csrf": token, "method": "exact", "timeLimit": "10"},
            files={"pref": ("pref.csv", b"name,P1,N1\n1,10,x\n"), "proj": ("proj.csv", PROJ)},
        )
        assert bad.status_code == 400 and "line 2" in bad.text and "&#39;x&#39;" in bad.text
        sent = ui.post(
            "/ui/allocation",
            data={"csrf": token, "method": "exact", "timeLimit": "10"},
            files={"pref": ("pref.csv", PREF), "proj": ("proj.csv", PROJ),
                   "config": ("c.json", b'{"defaultLoad": 1}')},
        )  # fmt: skip
        assert sent.status_code == 303
        target = sent.headers["location"]
        job_id = target.rsplit("/", 1)[-1]
        waiting = ui.get(f"{target}/live")
        assert 'hx-trigger="every 1s"' in waiting.text and "queued" in waiting.text
        assert store.get(job_id).input["config"]["timeLimit"] == 10

        worker = start_worker(store_url, home, "--burst", "--import", "conveyor.kinds.allocate",
                              "--concurrency", "1", env=worker_env(home))  # fmt: skip
        try:
            assert worker.wait(90) == 0
        finally:
            stop(worker)

        done = ui.get(target)
        assert done.status_code == 200
        assert "every 1s" not in done.text and "proven optimal" in done.text
        chart = re.search(r'<svg id="rank-histogram".*?</svg>', done.text, re.S)
        assert chart is not None and "rank 1:" in chart.group(0)
        # Each supervisor takes one student (defaultLoad 1): two students get nothing.
        assert "none" in chart.group(0)
        assert done.text.count("<tr><td>") >= 4 + 2  # allocation rows + supervisor rows
        listed = ui.get("/ui/allocation")
        assert job_id in listed.text
        csv_file = ui.get(f"/ui/jobs/{job_id}/files/out/allocation.csv")
        assert csv_file.status_code == 200
        rows = list(csv.DictReader(io.StringIO(csv_file.text)))
        assert [r["student"] for r in rows] == ["1", "2", "3", "4"]
        assert sorted(r["supervisor"] for r in rows if r["project"]) == ["jones", "smith"]
    store.close()
