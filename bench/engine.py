"""Engine benchmark: batch enqueue, drain and idle latency of `noop` jobs (SQLite by default).

    python bench/engine.py [--n 20000] [--concurrency 2] [--synchronous full] [--prefetch 1]
                           [--store redis://127.0.0.1:6379/5?allow_no_persistence=1]

Prints a table and writes bench/results/engine.json. The store is a temp SQLite file in its
durable setting (WAL, synchronous=FULL) unless told otherwise, or the store at `--store` (a
PostgreSQL database or Redis db the bench may empty: it deletes every job at the start);
workers are one real `conveyor worker` process with N children, as a user would run it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from harness import ROOT, conveyor_env, start, stop

from conveyor.kinds.registry import import_kinds
from conveyor.models import NewJob
from conveyor.service import Service
from conveyor.storage import open_storage
from conveyor.store import open_store
from conveyor.store.base import Store


def succeeded(service: Service) -> int:
    return sum(s.succeeded for s in service.queues())


def wait_count(service: Service, target: int, timeout: float, last: str | None = None) -> float:
    """Wait until `target` jobs succeeded; watching the last job first keeps the polling cheap
    (a count scans the table, and the bench must not steal the worker's CPU)."""
    deadline = time.perf_counter() + timeout
    if last is not None:
        while service.get(last).state.value != "succeeded":
            if time.perf_counter() > deadline:
                raise SystemExit(f"timed out waiting for {last}")
            time.sleep(0.002)
    while (done := succeeded(service)) < target:
        if time.perf_counter() > deadline:
            raise SystemExit(f"timed out: {done}/{target} finished")
        time.sleep(0.005)
    return time.perf_counter()


def empty(store: Store) -> None:
    """Delete every job of a reused store, so counts start at zero."""
    while pruned := store.prune(float("inf"), limit=100_000):
        print(f"{len(pruned)} finished jobs of an earlier run deleted")
    if any(s.queued or s.running or s.scheduled for s in store.queue_stats()):
        raise SystemExit("the store has unfinished jobs: give the bench an empty store")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--latency-n", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--prefetch", type=int, default=32)  # the worker's default
    parser.add_argument("--synchronous", default="full")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--store", help="a store URL to use instead of a temp SQLite file")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "engine.json"))
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    url = args.store or f"sqlite:///{tmp / 'bench.db'}?synchronous={args.synchronous}"
    store = open_store(url)
    empty(store)
    store.register_kinds(import_kinds(["conveyor.kinds.demo"]).infos())
    service = Service(store, open_storage(f"file://{tmp / 'files'}"))

    # 1. Batch enqueue, no workers running.
    jobs = [NewJob(kind="noop") for _ in range(args.n)]
    began = time.perf_counter()
    for first in range(0, args.n, args.batch):
        last = service.submit_many(jobs[first : first + args.batch])[-1].id
    enqueue_s = time.perf_counter() - began

    # 2. Drain: start the worker on the full queue; time to the last completion.
    env = conveyor_env(tmp, imports="conveyor.kinds.demo")
    options = ("-c", str(args.concurrency), "--prefetch", str(args.prefetch))
    began = time.perf_counter()
    worker = start("worker", url, tmp, *options, env=env)
    ended = wait_count(service, args.n, timeout=600, last=last)
    drain_s = ended - began
    # CPU of the whole worker tree (supervisor + reaped children): a figure that, unlike
    # wall time, does not depend on what else the machine is doing.
    worker.terminate()
    _, _, usage = os.wait4(worker.pid, 0)
    worker_cpu_s = usage.ru_utime + usage.ru_stime
    cpu_before = os.times()

    # 3. Idle latency: sequential submit → succeeded round trips.
    worker = start("worker", url, tmp, *options, env=env)
    service.submit(NewJob(kind="noop"))
    wait_count(service, args.n + 1, timeout=120)
    latencies = []
    for _ in range(args.latency_n):
        t0 = time.perf_counter()
        job = service.submit(NewJob(kind="noop"))
        while service.get(job.id).state.value != "succeeded":
            time.sleep(0.0002)
        latencies.append((time.perf_counter() - t0) * 1000)

    # 4. Warm drain: the worker is up and idle; N more jobs arrive in batches while it works
    #    (the peer benchmark's method), timed from the first enqueue to the last completion.
    done_before = succeeded(service)
    began = time.perf_counter()
    for first in range(0, args.n, args.batch):
        last = service.submit_many(jobs[first : first + args.batch])[-1].id
    warm_s = wait_count(service, done_before + args.n, timeout=600, last=last) - began
    stop(worker)
    latencies.sort()
    per_job_ms = 1000 * worker_cpu_s / args.n
    result = {
        "n": args.n,
        "concurrency": args.concurrency,
        "prefetch": args.prefetch,
        "store": url.split(":", 1)[0],
        "synchronous": args.synchronous,
        "enqueue_jobs_per_s": round(args.n / enqueue_s),
        "drain_jobs_per_s": round(args.n / drain_s),
        "drain_s_including_worker_start": round(drain_s, 2),
        "warm_drain_jobs_per_s_with_concurrent_enqueue": round(args.n / warm_s),
        "worker_cpu_ms_per_job": round(per_job_ms, 3),
        "drain_bound_by_worker_cpu_2_cores": round(2000 / per_job_ms),
        "latency_p50_ms": round(statistics.median(latencies), 2),
        "latency_p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "load_avg_1m": os.getloadavg()[0],
        "client_cpu_s": round(cpu_before.user + cpu_before.system, 2),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
