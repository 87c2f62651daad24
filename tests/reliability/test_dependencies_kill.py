"""Exactly once for blocked jobs (#19): the process settling the last dependency of a job (or a
WAIT that spawns children) is SIGKILLed at each step of the settlement, on every shared store.

A settler process claims the parents and settles them, and kills itself at one step: before
the store call, inside the store's transaction after the release was written but before the
commit (SQL stores; a Redis script runs whole or not at all), or right after the call
returned. The test then rescues its leases and runs everything left to the end, as a worker
would (a parent whose WAIT was lost runs its handler again and spawns again). Every dependent
must have been released once and run once; every waiting parent must have exactly one round
of children and resume once.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conveyor.ids import uuid7
from conveyor.models import JobFilter, JobState
from conveyor.store import JobSpec, Outcome, Settlement, Store, open_store
from tests.backends import Backend
from tests.integration.harness import PYTHONPATH, ROOT
from tests.reliability.conftest import STORES

pytestmark = pytest.mark.timeout(300)
PAIRS = 12
CHILDREN = 3
QUEUE = "deps"

SETTLER = """
import json, os, signal, sys
from conveyor.ids import uuid7
from conveyor.store import JobSpec, Outcome, Settlement, open_store
url, owner, step, mode, queue, children = sys.argv[1:7]

def die(*_, **__):
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)

if step == "in_transaction" and url.startswith("sqlite"):
    from conveyor.store import sqlite_deps
    release = sqlite_deps.release
    def release_then_die(db, ids, now):
        release(db, ids, now)
        die()  # the transaction is open: its changes are written, not committed
    sqlite_deps.release = release_then_die
elif step == "in_transaction":
    from conveyor.store import pg_deps
    from conveyor.store.postgres import PostgresStore
    pipeline = PostgresStore._pipeline
    def pipeline_then_die(conn, statements, *, begin):
        if not any(st[0] is pg_deps.RELEASE for st in statements):
            return pipeline(conn, statements, begin=begin)
        with conn.pipeline():  # every statement runs on the server; no COMMIT follows
            if begin:
                conn.execute("BEGIN")
            for sql, params in statements:
                conn.execute(sql.encode(), params)
        die()
    PostgresStore._pipeline = staticmethod(pipeline_then_die)

store = open_store(url)
jobs = store.claim([queue], owner, 1000, 600.0)
settlements = []
for job in jobs:
    if mode == "wait":
        kids = [JobSpec(id=uuid7(), kind="noop", queue=queue, input={"i": i}, run_at=0.0)
                for i in range(int(children))]
        settlements.append(Settlement(job.id, job.lease.token, Outcome.WAIT, spawn=kids,
                                      continuation={"round": owner}))
    else:
        settlements.append(Settlement(job.id, job.lease.token, Outcome.SUCCEEDED, result=1))
print(json.dumps(sorted(j.id for j in jobs)), flush=True)
if step == "before":
    die()
store.settle(settlements)
if step == "after":
    die()
print("survived", flush=True)
"""


def spec(**fields: object) -> JobSpec:
    values: dict[str, object] = {"id": uuid7(), "kind": "noop", "queue": QUEUE, "input": {},
                                 "run_at": 0.0, "max_attempts": 5, "backoff_s": 0.0}  # fmt: skip
    values.update(fields)
    return JobSpec(**values)  # type: ignore[arg-type]


def settle_and_die(url: str, owner: str, step: str, mode: str) -> list[str]:
    """Run the settler; return the ids it claimed. It must have died (SIGKILL)."""
    done = subprocess.run(
        [sys.executable, "-c", SETTLER, url, owner, step, mode, QUEUE, str(CHILDREN)],
        env={"PYTHONPATH": PYTHONPATH, "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -9, done.stderr
    return list(json.loads(done.stdout.splitlines()[0]))


def run_to_the_end(store: Store, mode: str) -> None:
    """What workers would do: rescue the dead settler's leases, then run every job; a parent
    resumed after its children succeeds, one whose WAIT was lost waits again."""
    for _ in range(200):
        store.rescue(owner="settler")
        store.rescue()  # promote what the rescue scheduled (backoff 0)
        jobs = store.claim([QUEUE], "drainer", 1000, 600.0)
        if not jobs:
            if all(j.state.is_final for j in all_jobs(store)):
                return
            continue
        settlements = []
        for job in jobs:
            if mode == "wait" and job.parent_id is None and job.continuation is None:
                kids = [spec(input={"i": i}) for i in range(CHILDREN)]
                again = {"round": "drainer"}
                settlements.append(Settlement(job.id, job.lease.token, Outcome.WAIT,
                                              spawn=kids, continuation=again))  # fmt: skip
            else:
                settlements.append(Settlement(job.id, job.lease.token, Outcome.SUCCEEDED))
        assert all(store.settle(settlements))
    raise AssertionError("jobs never all finished")


def all_jobs(store: Store) -> list:
    jobs, cursor = [], None
    while True:
        page = store.list_jobs(JobFilter(queue=QUEUE), cursor, 1000)
        jobs += page.jobs
        if page.next_cursor is None:
            return jobs
        cursor = page.next_cursor


def states(store: Store, job_id: str) -> list[str]:
    return [e.data["state"] for e in store.events(job_id) if e.type == "state"]


STEPS = {
    "sqlite": ["before", "in_transaction", "after"],
    "postgres": ["before", "in_transaction", "after"],
    "redis": ["before", "after"],  # a script is atomic: there is no step inside it
}


@pytest.mark.parametrize("step", ["before", "in_transaction", "after"])
@pytest.mark.parametrize("shared_backend", STORES, indirect=True)
def test_dependent_starts_once_when_the_settler_of_its_last_parent_dies(
    shared_backend: Backend, step: str
) -> None:
    if step not in STEPS[shared_backend.name]:
        pytest.skip(f"{shared_backend.name} has no step {step}")
    store = open_store(shared_backend.url)
    try:
        firsts = store.enqueue([spec(queue="first") for _ in range(PAIRS)])
        lasts = store.enqueue([spec() for _ in range(PAIRS)])
        downs = store.enqueue(
            [spec(depends_on=(a.id, b.id)) for a, b in zip(firsts, lasts, strict=True)]
        )
        # The first parents end before: the settler settles each dependent's last parent.
        for job in store.claim(["first"], "w", 1000, 60.0):
            assert store.settle([Settlement(job.id, job.lease.token, Outcome.SUCCEEDED)])
        assert {j.state for j in downs} == {JobState.BLOCKED}
        claimed = settle_and_die(shared_backend.url, "settler", step, "plain")
        assert claimed == sorted(j.id for j in lasts)
        run_to_the_end(store, "plain")
        for down in downs:
            got = store.get(down.id)
            assert got.state is JobState.SUCCEEDED
            assert states(store, down.id) == ["blocked", "queued", "running", "succeeded"], step
        committed = step == "after"
        for last in lasts:
            assert store.get(last.id).attempt == (1 if committed else 2)
    finally:
        store.close()


@pytest.mark.parametrize("step", ["before", "in_transaction", "after"])
@pytest.mark.parametrize("shared_backend", STORES, indirect=True)
def test_a_wait_spawns_one_round_of_children_when_its_settler_dies(
    shared_backend: Backend, step: str
) -> None:
    if step not in STEPS[shared_backend.name]:
        pytest.skip(f"{shared_backend.name} has no step {step}")
    store = open_store(shared_backend.url)
    try:
        parents = store.enqueue([spec() for _ in range(PAIRS)])
        settle_and_die(shared_backend.url, "settler", step, "wait")
        run_to_the_end(store, "wait")
        for parent in parents:
            got = store.get(parent.id)
            assert got.state is JobState.SUCCEEDED
            kids = store.list_jobs(JobFilter(parent_id=parent.id), None, 100).jobs
            assert len(kids) == CHILDREN, "exactly one round of children"
            assert all(k.state is JobState.SUCCEEDED for k in kids)
            assert states(store, parent.id).count("blocked") == 1
            assert states(store, parent.id)[-4:] == ["blocked", "queued", "running", "succeeded"]
            expected = "settler" if step == "after" else "drainer"
            assert got.continuation == {"round": expected}
    finally:
        store.close()
