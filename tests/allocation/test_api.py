"""The original Project Allocation API on real servers: uvicorn on free ports, a real worker."""

from __future__ import annotations

import csv
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.api.app import create_app
from conveyor.kinds.allocate import checker
from conveyor.kinds.allocate.generate import instance
from conveyor.kinds.allocate.models import AllocateInput
from conveyor.models import JobState
from conveyor.settings import Settings
from conveyor.store import Store, open_store
from tests.integration.harness import start_worker, stop, wait_for, wait_state, worker_env
from tests.servers.http import serve_in_thread

pytestmark = pytest.mark.timeout(180)


class Env:
    """Two API servers on one store (no job lives in a web process), plus workers on demand."""

    def __init__(self, home: Path, store_url: str, urls: list[str], store: Store) -> None:
        self.home, self.store_url, self.store = home, store_url, store
        self.a = httpx.Client(base_url=urls[0], timeout=30)
        self.b = httpx.Client(base_url=urls[1], timeout=30)

    def worker(self, *args: str) -> subprocess.Popen[bytes]:
        return start_worker(
            self.store_url, self.home, "--import", "conveyor.kinds.allocate",
            "--concurrency", "1", *args, env=worker_env(self.home),
        )  # fmt: skip

    def run_burst(self, timeout: float = 90) -> None:
        process = self.worker("--burst")
        try:
            assert process.wait(timeout) == 0
        finally:
            stop(process)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    home = tmp_path / "home"
    store_url = f"sqlite:///{tmp_path / 'conveyor.db'}"
    settings = Settings(home=home, store=store_url, storage=f"file://{home / 'files'}")
    with ExitStack() as stack:
        urls = [stack.enter_context(serve_in_thread(create_app(settings))) for _ in range(2)]
        store = open_store(store_url)
        stack.callback(store.close)
        yield Env(home, store_url, urls, store)


def write_csvs(folder: Path, data: dict[str, Any]) -> tuple[Path, Path]:
    pref, proj = folder / "pref.csv", folder / "proj.csv"
    width = max(len(choices) for choices in data["pref"].values())
    with pref.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["name", *[c for i in range(1, width + 1) for c in (f"P{i}", f"N{i}")]])
        for student, choices in data["pref"].items():
            cells = [str(v) for p, r in choices for v in (p, r)]
            out.writerow([student, *cells, *[""] * (2 * width - len(cells))])
    with proj.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["PID", "SUP", "CAP"])
        for project, supervisor in data["staff"].items():
            out.writerow([project, supervisor, data["config"]["projectCapacity"][project]])
    return pref, proj


def files(pref: Path, proj: Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "pref": ("pref.csv", pref.read_bytes(), "text/csv"),
        "proj": ("proj.csv", proj.read_bytes(), "text/csv"),
    }
    if config is not None:
        out["config"] = ("config.json", json.dumps(config).encode(), "application/json")
    return out


def test_csv_files_202_progress_rises_then_result(env: Env, tmp_path: Path) -> None:
    data = instance(1000, 400, 130, seed=11)
    pref, proj = write_csvs(tmp_path, data)
    config = {"defaultLoad": data["config"]["defaultLoad"], "maxRank": 10, "timeLimit": 20}
    r = env.a.post("/allocation/allocate_file/", files=files(pref, proj, config))
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert env.b.get("/allocation/get_status/", params={"job_id": job_id}).text == "queued"
    assert env.b.get("/allocation/get_result/", params={"job_id": job_id}).status_code == 204
    assert env.b.get("/allocation/get_progress/", params={"job_id": job_id}).json() == {
        "percent": 0.0
    }
    got = env.b.get("/allocation/get_config/", params={"job_id": job_id}).json()
    assert got["timeLimit"] == 20 and got["weightRank"] == 1 and got["maxRank"] == 10

    worker = env.worker("--burst")
    seen: list[float] = []
    statuses = set()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            status = env.a.get("/allocation/get_status/", params={"job_id": job_id}).text
            statuses.add(status)
            seen.append(
                env.b.get("/allocation/get_progress/", params={"job_id": job_id}).json()["percent"]
            )
            if status in ("finished", "failed"):
                break
        assert worker.wait(60) == 0
    finally:
        stop(worker)
    assert status == "finished", env.store.get(job_id).error
    assert "started" in statuses
    assert seen == sorted(seen) and seen[-1] == 100.0
    # The solver's progress reached the job's event log as a rising series.
    progress = [e.data["current"] for e in env.store.events(job_id) if e.type == "progress"]
    assert len(progress) >= 3 and progress == sorted(progress) and progress[-1] > progress[0]

    result = env.a.get("/allocation/get_result/", params={"job_id": job_id})
    assert result.status_code == 200
    allocation = result.json()
    assert len(allocation) == 1000
    # The original's shape: {student: project}, 0 for unallocated.
    inp = AllocateInput.model_validate(
        {"pref": data["pref"], "staff": data["staff"],
         "config": {**config, "projectCapacity": data["config"]["projectCapacity"]}}
    )  # fmt: skip
    named = {s: (None if p == 0 else str(p)) for s, p in allocation.items()}
    report = checker.evaluate(inp, named)
    assert report.violations == []
    job = env.b.get(f"/v1/jobs/{job_id}").json()
    assert job["result"]["proven_optimal"] is True
    assert job["result"]["objective"] == pytest.approx(report.objective)
    listed = env.b.get(f"/v1/jobs/{job_id}/files").json()
    names = [f["name"] for f in (listed["files"] if isinstance(listed, dict) else listed)]
    assert "allocation.csv" in names


def test_unknown_job_is_204_here_and_404_on_v1(env: Env) -> None:
    for path in ("get_status/", "get_progress/", "get_config/", "get_result/"):
        r = env.a.get(f"/allocation/{path}", params={"job_id": "no-such-job"})
        assert r.status_code == 204 and r.content == b"", path
    assert env.a.get("/allocation/get_status/").status_code == 204
    assert env.a.delete("/allocation/deletejob", params={"jobid": "nope"}).status_code == 204
    r = env.a.get("/v1/jobs/no-such-job")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")


def test_malformed_csv_is_400_naming_the_line(env: Env, tmp_path: Path) -> None:
    proj = tmp_path / "proj.csv"
    proj.write_text("PID,SUP\n1,10\n2,10\n")
    bad = tmp_path / "pref.csv"
    bad.write_text("name,P1,N1,P2,N2\n1,1,1,2,2\n2,2,one,1,2\n")
    r = env.a.post("/allocation/allocate_file/", files=files(bad, proj))
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert "pref" in detail and "line 3" in detail and "'one'" in detail

    short = tmp_path / "short.csv"
    short.write_text("name,P1,N1\n1,1,1\n2,2\n")
    detail = env.a.post("/allocation/allocate_file/", files=files(short, proj)).json()["detail"]
    assert "line 3" in detail and "fewer fields" in detail

    good = tmp_path / "good.csv"
    good.write_text("name,P1,N1\n1,1,1\n")
    no_col = tmp_path / "nocol.csv"
    no_col.write_text("PID,SUPERVISOR\n1,10\n")
    r = env.a.post("/allocation/allocate_file/", files=files(good, no_col))
    assert r.status_code == 400 and "SUP" in r.json()["detail"]

    r = env.a.post("/allocation/allocate_file/", files={"pref": ("p.csv", b"name,P1\n1,1\n")})
    assert r.status_code == 400 and "proj" in r.json()["detail"]

    r = env.a.post("/allocation/allocate_json/", content=b"{nope")
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
    r = env.a.post("/allocation/allocate_json/", json={"pref": {}})
    assert r.status_code == 400 and "staff" in r.json()["detail"]
    r = env.a.post("/allocation/allocate_json/", json={"pref": {"1": [[1, "x"]]}, "staff": {}})
    assert r.status_code == 400 and "pref.1" in r.json()["detail"]
    assert env.store.list_jobs(_all()).jobs == []


def _all() -> Any:
    from conveyor.models import JobFilter

    return JobFilter()


def test_json_job_result_infeasible_failure_and_delete(env: Env) -> None:
    ok = {
        "pref": {"1": [[10, 1], [11, 2]], "2": [[10, 1], [11, 2]], "3": [[12, 1]]},
        "staff": {"10": 100, "11": 100, "12": 200},
        "config": {"defaultLoad": 1, "weightVarLoad": 0},
    }
    infeasible = {
        "pref": {"1": [[10, 1]], "2": [[11, 1]]},
        "staff": {"10": "smith", "11": "smith"},
        "config": {"specialLoading": {"smith": 1}, "forcedMatching": {"1": 10, "2": 11}},
    }
    ok_id = env.a.post("/allocation/allocate_json/", json=ok).json()["id"]
    bad_id = env.a.post("/allocation/allocate_json/", json=infeasible).json()["id"]
    env.run_burst()

    assert env.b.get("/allocation/get_status/", params={"job_id": ok_id}).text == "finished"
    result = env.b.get("/allocation/get_result/", params={"job_id": ok_id}).json()
    # Supervisor 100 takes one student: one of 1 and 2 gets 10, the other nothing (0).
    assert sorted([result["1"], result["2"]]) == [0, 10] and result["3"] == 12

    assert env.b.get("/allocation/get_status/", params={"job_id": bad_id}).text == "failed"
    assert env.b.get("/allocation/get_result/", params={"job_id": bad_id}).status_code == 204
    error = env.b.get(f"/v1/jobs/{bad_id}").json()["error"]["message"]
    assert "'smith'" in error and "specialLoading['smith']=1" in error and "1, 2" in error

    assert env.a.delete("/allocation/deletejob", params={"jobid": ok_id}).status_code == 204
    assert env.b.get("/allocation/get_status/", params={"job_id": ok_id}).status_code == 204
    assert env.b.get(f"/v1/jobs/{ok_id}").status_code == 404


def test_cancel_stops_a_running_local_search(env: Env) -> None:
    data = instance(300, 120, 40, seed=2, method="local_search", numRuns=50, timeLimit=600)
    job_id = env.a.post("/allocation/allocate_json/", json=data).json()["id"]
    worker = env.worker()
    try:
        wait_state(env.store, job_id, [JobState.RUNNING], timeout=60)
        wait_for(lambda: any(e.type == "log" for e in env.store.events(job_id)), timeout=30)
        asked = time.monotonic()
        assert env.b.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
        wait_state(env.store, job_id, [JobState.CANCELLED], timeout=30)
        assert time.monotonic() - asked < 10
    finally:
        stop(worker)
    assert env.a.get("/allocation/get_status/", params={"job_id": job_id}).text == "canceled"


def test_inconsistent_preferences_are_400_naming_the_rows(env: Env, tmp_path: Path) -> None:
    """A project missing from the project data, a project or a rank twice in one list: the
    original accepted all three (and allocated students to unsupervised projects)."""
    staff = {"1": "a", "2": "a", "3": "b"}
    cases = {
        "'9' not in the projects": {"s1": [[1, 1]], "s2": [[9, 1], [2, 2]]},
        "'1' ranked twice": {"s1": [[1, 1], [1, 2]]},
        "rank(s) 1 given twice": {"s1": [[1, 1], [2, 1]]},
    }
    for named, pref in cases.items():
        r = env.a.post("/allocation/allocate_json/", json={"pref": pref, "staff": staff})
        assert r.status_code == 400, r.text
        assert named in r.json()["detail"] and "student '" in r.json()["detail"], r.text
    proj = tmp_path / "proj.csv"
    proj.write_text("PID,SUP\n1,a\n2,a\n3,b\n")
    pref = tmp_path / "pref.csv"
    pref.write_text("name,P1,N1,P2,N2\nann,1,1,2,2\nbob,3,1,7,2\ncid,2,1,2,2\n")
    r = env.a.post("/allocation/allocate_file/", files=files(pref, proj))
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert "line 3 (bob)" in detail and "'7' not in the projects" in detail
    assert "line 4 (cid)" in detail and "'2' ranked twice" in detail
    assert "ann" not in detail
    assert env.store.list_jobs(_all()).jobs == []


def test_an_empty_optional_file_part_is_no_file(env: Env, tmp_path: Path) -> None:
    """A browser form whose optional `config` input was left alone sends an empty part."""
    proj = tmp_path / "proj.csv"
    proj.write_text("PID,SUP\n1,a\n2,b\n")
    pref = tmp_path / "pref.csv"
    pref.write_text("name,P1,N1\nann,1,1\nbob,2,1\n")
    sent = {**files(pref, proj), "config": ("", b"", "application/octet-stream")}
    r = env.a.post("/allocation/allocate_file/", files=sent)
    assert r.status_code == 202, r.text


def test_local_search_progress_rises_while_it_runs(env: Env) -> None:
    """`get_progress` moves during a local search whose first run takes most of the time."""
    data = instance(400, 150, 50, seed=3, method="local_search", numRuns=1000, timeLimit=8)
    job_id = env.a.post("/allocation/allocate_json/", json=data).json()["id"]
    worker = env.worker("--burst")
    try:
        wait_state(env.store, job_id, [JobState.RUNNING], timeout=60)

        def percent() -> float:
            got = env.b.get("/allocation/get_progress/", params={"job_id": job_id}).json()
            return float(got["percent"])

        midway = wait_for(lambda: 0 < percent() < 100 and percent(), timeout=30)
        assert worker.wait(90) == 0
    finally:
        stop(worker)
    assert 0 < midway < 100
    assert percent() == 100.0
