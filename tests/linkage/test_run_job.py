"""A linkage run of more than 1,000 chunks completes: the run job spawns them as child jobs (one
store transaction whatever their number, no 1,000-job batch limit) and solves when they end."""

from __future__ import annotations

import json
import random
from pathlib import Path

from conveyor.kinds.linkage import encodings
from conveyor.kinds.linkage.kind import RUN, RunInput, clks_key, result_key
from conveyor.kinds.registry import import_kinds
from conveyor.models import JobFilter, JobState, NewJob
from conveyor.service import Service
from conveyor.storage import open_storage
from conveyor.store import open_store
from conveyor.store.base import jobs_by_id
from tests.integration.harness import start_worker, worker_env

PROJECT = "0190f3c2-0000-7000-8000-00000000beef"


def test_a_run_of_more_than_1000_chunks_completes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'conveyor.db'}"
    store = open_store(url)
    store.register_kinds(import_kinds(["conveyor.kinds.linkage"]).infos())
    storage = open_storage(f"file://{tmp_path / 'files'}")
    service = Service(store, storage)
    rng = random.Random(7)
    a = [rng.randbytes(16) for _ in range(330)]
    b = [*a[:300], *(rng.randbytes(16) for _ in range(30))]  # 300 records in common
    for party, rows in enumerate((a, b)):
        storage.write(clks_key(PROJECT, party), [encodings.pack(rows)[0]])
    # 330 x 330 comparisons in chunks of about 100: well over 1,000 chunks.
    inp = RunInput(project_id=PROJECT, run_id="big", threshold=0.99, size=16, sizes=[330, 330],
                   result_type="groups", chunk_aim=100, tags=["linkage-run:big"])  # fmt: skip
    job = service.submit(NewJob(kind=RUN, input=inp.model_dump()))
    home = tmp_path / "home"
    env = worker_env(home, CONVEYOR_IMPORTS="conveyor.kinds.linkage",
                     CONVEYOR_STORAGE=f"file://{tmp_path / 'files'}")  # fmt: skip
    worker = start_worker(url, home, "--burst", "-c", "2", env=env)
    assert worker.wait(600) == 0

    done = store.get(job.id)
    assert done.state is JobState.SUCCEEDED, done.error
    children = []
    cursor = None
    while True:
        page = store.list_jobs(JobFilter(parent_id=job.id), cursor, 1000)
        children += page.jobs
        if not (cursor := page.next_cursor):
            break
    assert len(children) > 1000
    assert all(c.state is JobState.SUCCEEDED for c in children)
    assert set(jobs_by_id(store, [c.id for c in children])) == {c.id for c in children}
    groups = json.loads(b"".join(storage.read(result_key(job.id))))["groups"]
    assert sorted(groups) == sorted([[0, i], [1, i]] for i in range(300))
    assert done.result["groups"] == 300
    store.close()
