"""Workflow benchmark (#19): store work per dependency edge, and a fan-out on a real worker.

    python bench/workflows.py [--n 5000] [--stores sqlite,postgres,redis] [--fanout 10000,100000]

1. Store work per edge, in-process, on each store (a temp SQLite file with synchronous=FULL,
   a throwaway PostgreSQL and Redis started for the run): the CPU time (this process plus the
   database server's processes: on a shared machine wall time measures the neighbours) of `n`
   plain jobs' enqueue + claim + settle, against `n` jobs each depending on another (enqueued
   blocked, released by its upstream's settlement) and against one WAIT of `n` children (each
   child's settlement counts the parent down). An edge's cost is what the dependent run costs
   beyond a plain job's; the target is at most 2x a plain job's enqueue + settle. Runs are
   interleaved, the median of `--repeat` kept.
2. Fan-out on SQLite with one real `conveyor worker -c 2`: submit a kind that spawns `n` noop
   children and resumes when they have ended; time from submit to the parent succeeded.

Prints a table and writes bench/results/workflows.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from harness import ROOT, conveyor_env, start, stop

from conveyor.ids import uuid7
from conveyor.kinds.registry import import_kinds
from conveyor.models import JobState, NewJob
from conveyor.service import Service
from conveyor.storage import open_storage
from conveyor.store import JobSpec, Outcome, Settlement, Store, open_store

BATCH = 1000


def spec(**fields: object) -> JobSpec:
    values: dict[str, object] = {"id": uuid7(), "kind": "noop", "queue": "bench", "input": {},
                                 "run_at": 0.0}  # fmt: skip
    values.update(fields)
    return JobSpec(**values)  # type: ignore[arg-type]


def drain(store: Store, expect: int) -> None:
    """Claim and settle (succeeded) `expect` jobs, BATCH at a time."""
    done = 0
    while done < expect:
        jobs = store.claim(["bench"], "bench", BATCH, 600.0)
        if not jobs:
            raise SystemExit(f"only {done} of {expect} jobs were claimable")
        store.settle([Settlement(j.id, j.lease.token, Outcome.SUCCEEDED) for j in jobs])
        done += len(jobs)


def enqueue(store: Store, specs: list[JobSpec]) -> None:
    for start_at in range(0, len(specs), BATCH):
        store.enqueue(specs[start_at : start_at + BATCH])


def plain(store: Store, n: int) -> None:
    enqueue(store, [spec() for _ in range(n)])
    drain(store, n)


def chained(store: Store, n: int) -> None:
    """n upstreams and n dependents (one edge each): 2n jobs, n edges."""
    ups = [spec() for _ in range(n)]
    downs = [spec(depends_on=(u.id,)) for u in ups]
    for start_at in range(0, n, BATCH):  # each batch carries its upstreams and dependents
        enqueue(store, ups[start_at : start_at + BATCH] + downs[start_at : start_at + BATCH])
    drain(store, 2 * n)


def fan_in(store: Store, n: int) -> None:
    """One job WAITs on n children: n + 1 jobs, n edges."""
    [parent] = store.enqueue([spec()])
    [job] = store.claim(["bench"], "bench", 1, 600.0)
    kids = [spec(parent_id=parent.id) for _ in range(n)]
    store.settle([Settlement(job.id, job.lease.token, Outcome.WAIT, spawn=kids)])
    drain(store, n + 1)  # the children, then the parent they release


def proc_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of live processes (from /proc)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def opened(name: str, tmp: Path) -> Iterator[tuple[Store, Callable[[], float]]]:
    """The store, and a meter of the CPU its server (if any) has used."""
    tmp.mkdir(parents=True, exist_ok=True)
    if name == "sqlite":
        store = open_store(f"sqlite:///{tmp / 'edges.db'}")
        yield store, lambda: 0.0
        store.close()
        return
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # the tests package: its throwaway servers
    from tests.servers.procfs import live_processes

    if name == "postgres":
        from tests.servers.postgres import running_server

        with running_server() as pg:
            store = open_store(pg.create_schema())
            group = pg.pid
            yield store, lambda: proc_cpu([p.pid for p in live_processes() if p.pgrp == group])
            store.close()
        return
    from tests.servers.redis import RedisServer

    server = RedisServer(tmp)
    server.start()
    try:
        store = open_store(server.url)
        assert server.proc is not None
        pid = server.proc.pid
        yield store, lambda: proc_cpu([pid])
        store.close()
    finally:
        server.stop()


def edge_costs(name: str, n: int, tmp: Path, repeat: int) -> dict[str, float]:
    runs: dict[str, list[float]] = {"plain": [], "chain": [], "wait": []}
    with opened(name, tmp) as (store, server_cpu):
        plain(store, min(n, 2000))  # warm up (connections, scripts, caches)
        for _ in range(repeat):
            for label, run in (("plain", plain), ("chain", chained), ("wait", fan_in)):
                before = time.process_time() + server_cpu()
                run(store, n)
                runs[label].append(time.process_time() + server_cpu() - before)
    per_job = statistics.median(runs["plain"]) / n
    per_chain_edge = statistics.median(runs["chain"]) / n - 2 * per_job
    per_wait_edge = statistics.median(runs["wait"]) / n - per_job
    return {
        "plain_job_us": per_job * 1e6,
        "dependency_edge_us": per_chain_edge * 1e6,
        "dependency_edge_ratio": per_chain_edge / per_job,
        "child_edge_us": per_wait_edge * 1e6,
        "child_edge_ratio": per_wait_edge / per_job,
    }


def fanout(n: int, tmp: Path) -> dict[str, float]:
    """Submit bench.fanout(n) to a temp SQLite store served by one real worker."""
    home = Path(tempfile.mkdtemp(prefix=f"fanout-{n}-", dir=tmp))
    url = f"sqlite:///{home / 'conveyor.db'}"
    store = open_store(url)
    store.register_kinds(import_kinds(["conveyor.kinds.demo", "fanout_kind"]).infos())
    service = Service(store, open_storage(f"file://{home / 'files'}"))
    env = conveyor_env(home, imports="conveyor.kinds.demo,fanout_kind")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "bench"), env.get("PYTHONPATH", "")])
    worker = start("worker", url, home, "-c", "2", env=env)
    try:
        warm = service.submit(NewJob(kind="noop", input={}))  # the worker is up and claiming
        deadline = time.monotonic() + 60
        while service.get(warm.id).state is not JobState.SUCCEEDED:
            if time.monotonic() > deadline:
                raise SystemExit("the worker did not start")
            time.sleep(0.01)
        # The same work as n plain jobs first (submitted in batches, drained by the same
        # worker): on a shared machine this is the yardstick the fan-out's time is read by.
        began = time.perf_counter()
        for start_at in range(0, n, BATCH):
            batch = service.submit_many([NewJob(kind="noop")] * min(BATCH, n - start_at))
        while service.get(batch[-1].id).state is not JobState.SUCCEEDED:
            time.sleep(0.01)
        while sum(s.succeeded for s in service.queues()) < n + 1:
            time.sleep(0.01)
        plain_s = time.perf_counter() - began
        began = time.perf_counter()
        job = service.submit(NewJob(kind="bench.fanout", input={"n": n}))
        deadline = time.monotonic() + 1800
        while (got := service.get(job.id)).state not in (JobState.SUCCEEDED, JobState.FAILED):
            if time.monotonic() > deadline:
                raise SystemExit(f"fan-out of {n} did not finish")
            time.sleep(0.01)
        took = time.perf_counter() - began
        if got.state is not JobState.SUCCEEDED or got.result != {"children": n, "succeeded": n}:
            raise SystemExit(f"fan-out of {n} ended {got.state.value}: {got.result or got.error}")
        at = {e.data["state"]: e.at.timestamp() for e in store.events(job.id) if e.type == "state"}
        first = next(e.at.timestamp() for e in store.events(job.id) if e.type == "state")
        phases = {  # from the parent's events (the last of each state)
            "submit_to_blocked_s": at["blocked"] - first,  # run, spawn, insert the children
            "children_s": at["queued"] - at["blocked"],  # the children run
            "resume_s": at["succeeded"] - at["queued"],  # read them, run the continuation
        }
        return {"n": n, "submit_to_succeeded_s": took, "plain_jobs_s": plain_s,
                "load": os.getloadavg()[0], **phases}  # fmt: skip
    finally:
        stop(worker)
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="jobs per edge-cost run")
    parser.add_argument("--stores", default="sqlite,postgres,redis")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fanout", default="10000,100000", help="fan-out sizes ('' for none)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "workflows.json"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-wf-"))
    results: dict[str, object] = {"machine": platform.platform(), "cpus": os.cpu_count(),
                                  "load_before": os.getloadavg()}  # fmt: skip
    edges = {}
    for name in [s for s in args.stores.split(",") if s]:
        edges[name] = costs = edge_costs(name, args.n, tmp / name, args.repeat)
        print(f"{name:9} plain job {costs['plain_job_us']:7.1f} us | dependency edge"
              f" {costs['dependency_edge_us']:7.1f} us ({costs['dependency_edge_ratio']:.2f}x)"
              f" | child edge {costs['child_edge_us']:7.1f} us"
              f" ({costs['child_edge_ratio']:.2f}x)", flush=True)  # fmt: skip
    results["edges"] = edges
    fans = []
    for n in [int(x) for x in args.fanout.split(",") if x]:
        fans.append(fanout(n, tmp))
        print(f"fan-out n={n:,} on SQLite: submit -> parent succeeded"
              f" {fans[-1]['submit_to_succeeded_s']:.2f} s (n plain jobs:"
              f" {fans[-1]['plain_jobs_s']:.2f} s; load {fans[-1]['load']:.1f}); phases:"
              f" to blocked {fans[-1]['submit_to_blocked_s']:.2f} s, children"
              f" {fans[-1]['children_s']:.2f} s, resume {fans[-1]['resume_s']:.2f} s",
              flush=True)  # fmt: skip
    results["fanout"] = fans
    results["load_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"load average {os.getloadavg()}; written to {args.out}")


if __name__ == "__main__":
    main()
