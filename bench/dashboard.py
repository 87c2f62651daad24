"""Dashboard benchmark: jobs page server time with 1,000,000 jobs in the store, and the overview
while jobs flow.

    python bench/dashboard.py [--store sqlite|postgres] [--dsn postgresql://…] [--jobs 1000000]
                              [--repeat 15] [--flow-rate 100]

Rows (and their tag index rows) are bulk-inserted as the store would write them, straight into
a temp SQLite store, or (`--store postgres`) a private throwaway PostgreSQL unless `--dsn` names
one, then the real app (API + dashboard, open on loopback) is served by uvicorn on a free port
and each page is fetched `--repeat` times over HTTP, first page and then the page its "Older"
link leads to. The table shows the server time of each
answer (arrival of the request to the last byte of the answer, measured inside the server
process: median, p95) and the process CPU time it took (median). With `--flow-rate`, jobs are
submitted and settled at that rate while the overview fragment is polled. Prints a table and
the load average, writes bench/results/dashboard[-postgres].json.
"""

from __future__ import annotations

import argparse
import html
import json
import multiprocessing
import os
import platform
import random
import re
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn
from harness import ROOT, free_port, postgres_database

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
COLUMNS = ("id, kind, queue, state, input, run_at, attempt, max_attempts, backoff_s, result,"
           " tags, created_at, started_at, finished_at, updated_at")  # fmt: skip
TIMES = (5, 11, 12, 13, 14)  # the columns above that hold times
NEXT_PAGE = re.compile(r'<a href="([^"]+)" rel="next">')


def uuid7_at(ms: int) -> str:
    """A UUIDv7 for a given millisecond (time-ordered like the store's ids)."""
    rand = random.getrandbits(74)
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & (2**62 - 1))
    return str(uuid.UUID(int=value))


def job_rows(n: int, now: float) -> Iterator[tuple[Any, ...]]:
    """`n` jobs spread over the last 30 days, oldest first, as COLUMNS (times as epoch
    seconds): 5 kinds, 3 queues, a tag per job from 1,000 customers, `rare` on 0.1 %."""
    rng = random.Random(7)
    states = [s for s, _ in STATES]
    weights = [w for _, w in STATES]
    start = now - 30 * 86400
    for i in range(n):
        created = start + (now - start) * i / n
        state = rng.choices(states, weights)[0]
        tags = [f"customer-{rng.randrange(1000)}"] + (["rare"] if rng.random() < 0.001 else [])
        finished = created + 5 if state in ("succeeded", "failed", "cancelled") else None
        yield (
            uuid7_at(int(created * 1000)), rng.choice(KINDS), rng.choice(QUEUES), state,
            f'{{"n": {i}}}', created, 1 if finished else 0, 3, 1.0,
            '{"total": 10}' if state == "succeeded" else None, json.dumps(tags),
            created, created + 1 if state != "queued" else None, finished, finished or created,
        )  # fmt: skip


def fill_sqlite(path: Path, rows: Iterator[tuple[Any, ...]]) -> None:
    """The jobs and their tag index rows, as the store's enqueue writes them. No ANALYZE:
    conveyor never runs it, and its statistics change the planner's choices (with them,
    SQLite walks all waiting jobs for a claim on an empty queue)."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous=OFF")
    marks = ",".join("?" * len(COLUMNS.split(",")))
    while batch := [row for _, row in zip(range(50_000), rows, strict=False)]:
        db.executemany(f"INSERT INTO jobs ({COLUMNS}) VALUES ({marks})", batch)
        db.executemany(
            "INSERT OR IGNORE INTO job_tags (tag, job_id) VALUES (?,?)",
            [(tag, row[0]) for row in batch for tag in json.loads(row[10])],
        )
        db.commit()
    db.close()


def fill_postgres(dsn: str, rows: Iterator[tuple[Any, ...]]) -> None:
    """COPY in batches (each one statement: the tag trigger runs once per batch), then
    VACUUM ANALYZE, as autovacuum would soon do."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        while batch := [row for _, row in zip(range(100_000), rows, strict=False)]:
            with conn.cursor().copy(f"COPY conveyor_jobs ({COLUMNS}) FROM STDIN") as copy:
                for row in batch:
                    copy.write_row([
                        datetime.fromtimestamp(v, UTC) if i in TIMES and v is not None else v
                        for i, v in enumerate(row)
                    ])  # fmt: skip
        conn.execute("VACUUM ANALYZE conveyor_jobs")
        conn.execute("VACUUM ANALYZE conveyor_job_tags")


class ServerClock:
    """ASGI wrapper around the app: the wall and process CPU time of the last request, from
    its arrival to the last byte of its answer (requests are sent one at a time)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last = (0.0, 0.0)

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        wall, cpu = time.perf_counter(), time.process_time()

        async def timed(message: MutableMapping[str, Any]) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.last = (time.perf_counter() - wall, time.process_time() - cpu)

        await self.app(scope, receive, timed)


def timings(
    client: httpx.Client, clock: ServerClock, path: str, repeat: int
) -> tuple[dict[str, float], str]:
    """Server wall time (median, p95, max) and CPU time (median) of `path`, and its HTML."""
    client.get(path)  # warm the page cache and the kinds cache
    walls, cpus = [], []
    for _ in range(repeat):
        answer = client.get(path)
        if answer.status_code != 200:
            raise SystemExit(f"{path}: {answer.status_code} {answer.text[:300]}")
        walls.append(clock.last[0])
        cpus.append(clock.last[1])
    walls.sort()
    ms = lambda seconds: round(seconds * 1000, 1)  # noqa: E731
    return {
        "median_ms": ms(statistics.median(walls)),
        "p95_ms": ms(walls[min(len(walls) - 1, int(len(walls) * 0.95))]),
        "max_ms": ms(walls[-1]),
        "cpu_median_ms": ms(statistics.median(cpus)),
    }, answer.text


def older_page(page: str) -> str | None:
    """The href of a jobs page's "Older" link (its next page), if it has one."""
    found = NEXT_PAGE.search(page)
    return None if found is None else html.unescape(found[1])


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
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--dsn", default=os.environ.get("BENCH_PG_DSN"),
                        help="PostgreSQL to use (default: a private throwaway server)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--flow-rate", type=float, default=100.0)
    parser.add_argument("--flow-seconds", type=float, default=20.0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    suffix = "" if args.store == "sqlite" else "-postgres"
    out = Path(args.out or ROOT / "bench" / "results" / f"dashboard{suffix}.json")
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-dash-"))
    try:
        if args.store == "sqlite":
            report = run(f"sqlite:///{tmp / 'bench.db'}", tmp, args)
        else:
            with postgres_database(args.dsn) as dsn:
                report = run(dsn, tmp, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a million jobs take about 550 MB
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


def pages_to_measure(now: float, middle: str) -> dict[str, str]:
    """Jobs pages by name (each measured with the page after it), then single pages."""
    day = lambda offset_days: time.strftime(  # noqa: E731
        "%Y-%m-%dT%H:%M", time.gmtime(now + offset_days * 86400)
    )
    return {
        "no filter": "/ui/jobs",
        "state=failed": "/ui/jobs?state=failed",
        "state=queued": "/ui/jobs?state=queued",
        "state=running (0.1%)": "/ui/jobs?state=running",
        "state=failed+cancelled": "/ui/jobs?state=failed&state=cancelled",
        "kind=linkage": "/ui/jobs?kind=linkage",
        "queue=gpu": "/ui/jobs?queue=gpu",
        "kind+queue+state": "/ui/jobs?kind=render&queue=bulk&state=failed",
        "tag=customer-42 (0.1%)": "/ui/jobs?tag=customer-42",
        "tag=rare (0.1%, spread)": "/ui/jobs?tag=rare",
        "tag=customer-42 + state=succeeded": "/ui/jobs?tag=customer-42&state=succeeded",
        "tag=customer-42 + kind=linkage": "/ui/jobs?tag=customer-42&kind=linkage",
        "tag=rare + queue=gpu": "/ui/jobs?tag=rare&queue=gpu",
        "tag no job has": "/ui/jobs?tag=nobody",
        "one day, 6 days ago": f"/ui/jobs?since={day(-7)}&until={day(-6)}",
        "tag + one day": f"/ui/jobs?tag=customer-42&since={day(-7)}&until={day(-6)}",
        "created in the next hour (none)": f"/ui/jobs?since={day(1 / 24)}",
        "a page in the middle (cursor)": f"/ui/jobs?cursor={middle}",
        "search by id (no such job)": f"/ui/jobs?id={middle}",
    }


def run(url: str, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    store = open_store(url)
    store.register_kinds(import_kinds(["conveyor.kinds.demo"]).infos())
    now = store.now()
    began = time.perf_counter()
    rows = job_rows(args.jobs, now)
    if url.startswith("sqlite"):
        fill_sqlite(tmp / "bench.db", rows)
    else:
        fill_postgres(url, rows)
    print(f"inserted {args.jobs:,} jobs in {time.perf_counter() - began:.1f}s")
    middle = uuid7_at(int((now - 15 * 86400) * 1000))

    settings = Settings(home=tmp, store=url, storage=f"file://{tmp / 'files'}")
    app = create_app(settings, store=store)
    clock = ServerClock(app)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(clock, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)

    load_before = os.getloadavg()
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
    print(f"{'jobs page (server time)':36s} {'page 1 median/p95, cpu':>26s}"
          f" {'page 2 median/p95, cpu':>26s}")  # fmt: skip
    cell = lambda t: f"{t['median_ms']:7.1f}/{t['p95_ms']:7.1f}, {t['cpu_median_ms']:5.1f} ms"  # noqa: E731
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        for name, path in pages_to_measure(now, middle).items():
            first, page = timings(client, clock, path, args.repeat)
            older = older_page(page)
            second = None if older is None else timings(client, clock, older, args.repeat)[0]
            results[name] = {"page 1": first, "page 2": second}
            print(f"{name:36s} {cell(first):>26s} {'-' if second is None else cell(second):>26s}")
        client.headers["HX-Request"] = "true"
        results["live rows poll"] = timings(client, clock, "/ui/jobs", args.repeat)[0]
        client.headers.pop("HX-Request")
        results["overview"] = timings(client, clock, "/ui/", args.repeat)[0]
        results["overview live fragment"] = timings(
            client, clock, "/ui/overview/live", args.repeat
        )[0]
        for name in ("live rows poll", "overview", "overview live fragment"):
            print(f"{name:36s} {cell(results[name]):>26s}")
        load_after = os.getloadavg()
        print(f"load average before / after the pages: {load_before[0]:.2f} / {load_after[0]:.2f}")
        if args.flow_rate > 0:
            results["overview while jobs flow"] = overview_while_jobs_flow(
                client, app, url, tmp, args
            )
    server.should_exit = True
    thread.join(10)
    store.close()
    return {
        "store": url.split(":", 1)[0], "jobs": args.jobs, "repeat": args.repeat,
        "machine": platform.machine(), "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version, "load_average_before": load_before,
        "load_average_after": load_after, "pages": results,
    }  # fmt: skip


def overview_while_jobs_flow(
    client: httpx.Client, app: Any, url: str, tmp: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Poll the overview fragment every 2 s while another process submits and settles jobs."""
    spawn = multiprocessing.get_context("spawn")
    done = spawn.Queue()
    feeder = spawn.Process(
        target=flow, args=(url, f"file://{tmp / 'files'}", args.flow_rate, args.flow_seconds, done)
    )
    feeder.start()
    polls = []
    deadline = time.perf_counter() + args.flow_seconds
    html_text = ""
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        html_text = client.get("/ui/overview/live").text
        polls.append(time.perf_counter() - t0)
        time.sleep(max(0.0, 2.0 - polls[-1]))  # the page polls every 2 s
    finished = done.get(timeout=60)
    feeder.join()
    tracker = app.state.dashboard_activity
    caught_up = time.perf_counter() + 10  # the feed reader runs once a second
    while (counted := sum(m.finished for m in tracker.series("flow"))) < finished:
        if time.perf_counter() > caught_up:
            break
        client.get("/ui/overview/live")
        time.sleep(0.2)
    rate = finished / args.flow_seconds
    polls.sort()
    result = {
        "jobs_per_s": round(rate, 1),
        "median_ms": round(statistics.median(polls) * 1000, 1),
        "max_ms": round(polls[-1] * 1000, 1),
        "flow_queue_shown": "flow" in html_text,
        "finished_flow_jobs": finished,
        "counted_by_overview": counted,
    }
    print(f"overview poll with {rate:.0f} jobs/s flowing: median {result['median_ms']} ms,"
          f" max {result['max_ms']} ms; the last-hour chart counted {counted} of {finished}"
          " finished jobs")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
