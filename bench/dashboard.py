"""Dashboard benchmark: jobs page server time with 1,000,000 jobs in SQLite, and the overview
while jobs flow.

    python bench/dashboard.py [--jobs 1000000] [--repeat 15] [--flow-rate 100]

Rows are bulk-inserted straight into a temp SQLite store (as the store would write them), then
the real app (API + dashboard, open on loopback) is served by uvicorn on a free port, and each
page is fetched `--repeat` times over HTTP; the table shows the median and p95 of the server's
answer time. With `--flow-rate`, jobs are submitted and settled at that rate while the overview
fragment is polled. Prints a table, writes bench/results/dashboard.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import random
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from harness import ROOT, free_port

from conveyor.api.app import create_app
from conveyor.kinds.registry import import_kinds
from conveyor.models import NewJob
from conveyor.service import Service
from conveyor.settings import Settings
from conveyor.storage import open_storage
from conveyor.store import open_store
from conveyor.store.base import Settlement
from conveyor.store.rules import Outcome

KINDS = ["render", "allocate", "kge.train", "linkage", "noop"]
QUEUES = ["default", "gpu", "bulk"]
# Mostly history, like a store that has run for a while.
STATES = [("succeeded", 0.90), ("failed", 0.04), ("cancelled", 0.02), ("queued", 0.035),
          ("scheduled", 0.004), ("running", 0.001)]  # fmt: skip


def uuid7_at(ms: int) -> str:
    """A UUIDv7 for a given millisecond (time-ordered like the store's ids)."""
    rand = random.getrandbits(74)
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & (2**62 - 1))
    return str(uuid.UUID(int=value))


def fill(path: Path, n: int, now: float) -> dict[str, Any]:
    """Insert `n` jobs spread over the last 30 days; return what the benchmark filters on."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous=OFF")
    rng = random.Random(7)
    states = [s for s, _ in STATES]
    weights = [w for _, w in STATES]
    start = now - 30 * 86400
    batch = []
    for i in range(n):
        created = start + (now - start) * i / n
        state = rng.choices(states, weights)[0]
        tags = [f"customer-{rng.randrange(1000)}"] + (["rare"] if rng.random() < 0.001 else [])
        finished = created + 5 if state in ("succeeded", "failed", "cancelled") else None
        batch.append((
            uuid7_at(int(created * 1000)), rng.choice(KINDS), rng.choice(QUEUES), state,
            f'{{"n": {i}}}', created, 1 if finished else 0, 3, 1.0,
            '{"total": 10}' if state == "succeeded" else None, json.dumps(tags),
            created, created + 1 if state != "queued" else None, finished, finished or created,
        ))  # fmt: skip
        if len(batch) == 50_000:
            _insert(db, batch)
            batch = []
    _insert(db, batch)
    # No ANALYZE: conveyor never runs it, and its statistics change the planner's choices
    # (with them, SQLite walks all waiting jobs for a claim on an empty queue).
    db.commit()
    db.close()
    return {"middle": uuid7_at(int((start + (now - start) / 2) * 1000))}


def _insert(db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    db.executemany(
        "INSERT INTO jobs (id, kind, queue, state, input, run_at, attempt, max_attempts,"
        " backoff_s, result, tags, created_at, started_at, finished_at, updated_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    db.commit()


def timings(client: httpx.Client, path: str, repeat: int) -> dict[str, float]:
    client.get(path)  # warm the page cache and the kinds cache
    seconds = []
    for _ in range(repeat):
        began = time.perf_counter()
        answer = client.get(path)
        seconds.append(time.perf_counter() - began)
        if answer.status_code != 200:
            raise SystemExit(f"{path}: {answer.status_code} {answer.text[:300]}")
    seconds.sort()
    return {
        "median_ms": round(statistics.median(seconds) * 1000, 1),
        "p95_ms": round(seconds[min(len(seconds) - 1, int(len(seconds) * 0.95))] * 1000, 1),
        "max_ms": round(seconds[-1] * 1000, 1),
    }


def flow(url: str, files: str, rate: float, seconds: float, done: Any) -> None:
    """In its own process (like API clients and workers): submit and settle `rate` noop jobs
    per second in batches of a tenth of a second, for `seconds`; put the count in `done`."""
    service = Service(open_store(url), open_storage(files))
    per_tick = max(1, int(rate / 10))
    count = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        began = time.perf_counter()
        service.submit_many([NewJob(kind="noop", queue="flow") for _ in range(per_tick)])
        claimed = service.store.claim(["flow"], "bench", per_tick, 30)
        service.store.settle([
            Settlement(j.id, j.lease.token, Outcome.SUCCEEDED, result={})
            for j in claimed if j.lease is not None
        ])  # fmt: skip
        count += len(claimed)
        time.sleep(max(0.0, 0.1 - (time.perf_counter() - began)))
    done.put(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--flow-rate", type=float, default=100.0)
    parser.add_argument("--flow-seconds", type=float, default=20.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "dashboard.json"))
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-dash-"))
    url = f"sqlite:///{tmp / 'bench.db'}"
    store = open_store(url)
    store.register_kinds(import_kinds(["conveyor.kinds.demo"]).infos())
    began = time.perf_counter()
    marks = fill(tmp / "bench.db", args.jobs, store.now())
    print(f"inserted {args.jobs:,} jobs in {time.perf_counter() - began:.1f}s")

    settings = Settings(home=tmp, store=url, storage=f"file://{tmp / 'files'}")
    app = create_app(settings, store=store)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)

    since = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(store.now() - 7 * 86400))
    until = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(store.now() - 6 * 86400))
    recent = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(store.now() + 3600))
    pages = {
        "jobs, first page": "/ui/jobs",
        "jobs, page at the middle (cursor)": f"/ui/jobs?cursor={marks['middle']}",
        "jobs, live rows poll": "/ui/jobs",  # with HX-Request below
        "state=failed": "/ui/jobs?state=failed",
        "state=queued": "/ui/jobs?state=queued",
        "state=running (0.1%)": "/ui/jobs?state=running",
        "kind=linkage": "/ui/jobs?kind=linkage",
        "queue=gpu": "/ui/jobs?queue=gpu",
        "kind+queue+state": "/ui/jobs?kind=render&queue=bulk&state=failed",
        "tag=customer-42 (0.1%)": "/ui/jobs?tag=customer-42",
        "tag=rare (0.1%, spread)": "/ui/jobs?tag=rare",
        "state=failed+cancelled": "/ui/jobs?state=failed&state=cancelled",
        "one day, 6 days ago": f"/ui/jobs?since={since}&until={until}",
        "created in the last hour (none)": f"/ui/jobs?since={recent}",
        "tag with no match (worst case)": "/ui/jobs?tag=nobody",
        "search by id": f"/ui/jobs?id={marks['middle']}",
        "overview": "/ui/",
        "overview live fragment": "/ui/overview/live",
    }
    results: dict[str, Any] = {}
    counts = []
    for _ in range(3):
        began = time.perf_counter()
        store.queue_stats()
        counts.append(time.perf_counter() - began)
    results["store.queue_stats() itself"] = {
        "median_ms": round(statistics.median(counts) * 1000, 1)
    }
    print(f"store.queue_stats() itself: {results['store.queue_stats() itself']['median_ms']} ms")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        for name, path in pages.items():
            if name == "jobs, live rows poll":
                client.headers["HX-Request"] = "true"
            results[name] = timings(client, path, args.repeat)
            client.headers.pop("HX-Request", None)
            print(f"{name:38s} {results[name]['median_ms']:8.1f} ms median"
                  f" {results[name]['p95_ms']:8.1f} ms p95")  # fmt: skip

        if args.flow_rate > 0:
            spawn = multiprocessing.get_context("spawn")
            done = spawn.Queue()
            feeder = spawn.Process(
                target=flow,
                args=(url, f"file://{tmp / 'files'}", args.flow_rate, args.flow_seconds, done),
            )
            feeder.start()
            polls = []
            deadline = time.perf_counter() + args.flow_seconds
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                html = client.get("/ui/overview/live").text
                polls.append(time.perf_counter() - t0)
                time.sleep(max(0.0, 2.0 - polls[-1]))  # the page polls every 2 s
            counter = [done.get(timeout=60)]
            feeder.join()
            tracker = app.state.dashboard_activity
            caught_up = time.perf_counter() + 10  # the feed reader runs once a second
            while (counted := sum(m.finished for m in tracker.series("flow"))) < counter[0]:
                if time.perf_counter() > caught_up:
                    break
                client.get("/ui/overview/live")
                time.sleep(0.2)
            seen = html.count("flow")
            rate = counter[0] / args.flow_seconds
            polls.sort()
            results["overview while jobs flow"] = {
                "jobs_per_s": round(rate, 1),
                "median_ms": round(statistics.median(polls) * 1000, 1),
                "max_ms": round(polls[-1] * 1000, 1),
                "flow_queue_shown": seen > 0,
                "finished_flow_jobs": counter[0],
                "counted_by_overview": counted,
            }
            print(f"overview poll with {rate:.0f} jobs/s flowing: median"
                  f" {results['overview while jobs flow']['median_ms']} ms,"
                  f" max {results['overview while jobs flow']['max_ms']} ms; the last-hour chart"
                  f" counted {counted} of {counter[0]} finished jobs")  # fmt: skip
    server.should_exit = True
    thread.join(10)
    report = {"jobs": args.jobs, "repeat": args.repeat, "machine": platform.machine(),
              "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
              "pages": results}  # fmt: skip
    store.close()
    shutil.rmtree(tmp, ignore_errors=True)  # a million jobs take about 470 MB
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
