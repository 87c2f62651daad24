"""Many processes claiming from one store at once: every job is completed exactly once.

Four processes claim batches of random size (1 to 50) from 2,000 jobs and settle each batch. A
claim must never return more than it asked for (the CTE keeps LIMIT honoured) and no job may be
handed to two claimers or settled twice.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conveyor.ids import uuid7
from conveyor.store import JobSpec, open_store
from tests.backends import Backend
from tests.integration.harness import PYTHONPATH, ROOT

pytestmark = pytest.mark.timeout(180)
N = 2000
PROCESSES = 4

CLAIMER = """
import json, random, sys
from conveyor.store import Outcome, Settlement, open_store
url, name, out = sys.argv[1:4]
store = open_store(url)
rng = random.Random(name)
claimed, applied, oversize = [], 0, 0
while True:
    n = rng.randint(1, 50)
    jobs = store.claim(["default"], name, n, 60.0)
    oversize += len(jobs) > n
    if not jobs:
        if not any(s.queued for s in store.queue_stats()):
            break
        continue
    claimed += [j.id for j in jobs]
    ok = store.settle([Settlement(j.id, j.lease.token, Outcome.SUCCEEDED, result=name)
                       for j in jobs])
    applied += sum(ok)
store.close()
json.dump({"claimed": claimed, "applied": applied, "oversize": oversize}, open(out, "w"))
"""


def test_four_processes_claim_each_job_exactly_once(backend: Backend, tmp_path: Path) -> None:
    if not backend.shared:
        pytest.skip(f"{backend.name} stores live in one process")
    url = backend.url
    store = open_store(url)
    now = time.time()
    for _ in range(N // 500):
        store.enqueue([JobSpec(id=uuid7(), kind="noop", queue="default", input={}, run_at=now)
                       for _ in range(500)])  # fmt: skip
    outs = [tmp_path / f"claimer-{i}.json" for i in range(PROCESSES)]
    started = time.monotonic()
    env = {"PYTHONPATH": PYTHONPATH, "PATH": "/usr/bin:/bin"}
    procs = [
        subprocess.Popen([sys.executable, "-c", CLAIMER, url, f"c{i}", str(out)], cwd=ROOT, env=env)
        for i, out in enumerate(outs)
    ]
    assert [p.wait(120) for p in procs] == [0] * PROCESSES
    elapsed = time.monotonic() - started
    results = [json.loads(out.read_text()) for out in outs]

    claims = Counter(job_id for r in results for job_id in r["claimed"])
    assert sum(r["oversize"] for r in results) == 0, "a claim returned more than its limit"
    assert len(claims) == N and set(claims.values()) == {1}, "a job was claimed twice"
    assert sum(r["applied"] for r in results) == N
    succeeded: Counter[str] = Counter()
    after = 0
    while batch := store.feed(after=after, limit=5000):
        succeeded.update(e.job_id for e in batch if e.data.get("state") == "succeeded")
        after = batch[-1].seq
    assert len(succeeded) == N and set(succeeded.values()) == {1}
    stats = {s.name: s for s in store.queue_stats()}
    assert stats["default"].succeeded == N
    print(f"\n{PROCESSES} claimers: {N} jobs claimed+settled in {elapsed:.1f}s, per process "
          f"{[len(r['claimed']) for r in results]}")  # fmt: skip
    store.close()
