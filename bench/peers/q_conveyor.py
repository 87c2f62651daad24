"""conveyor driver for the shared peer benchmark (../shared/peer-bench, see its README).

Variants: `sqlite` (a temp file, WAL, synchronous=FULL), `postgres` (BENCH_PG_DSN) and `redis`
(BENCH_REDIS_URL, another db index; the bench's Redis runs without persistence for every
library, so the store is told to accept that). Workers: one `conveyor worker -c 2` (a
supervisor and 2 child processes) at its defaults. Jobs go in through the Python service API,
the same way the peers' drivers use their libraries.

The no-op scenario runs a sync kind (one job at a time per child, conveyor's CPU-bound path);
the I/O-bound scenario (BENCH_TASK_SLEEP_MS > 0) an async kind, which a child runs many of at
once (its share of the worker's default 10,000 slots), as a user would write a job that waits.
"""

import asyncio
import os
import sys
import tempfile

import benchtask
from benchtask import TASK_SLEEP_S, signal_sync
from pydantic import BaseModel

import conveyor
from conveyor.kinds.registry import import_kinds
from conveyor.models import NewJob
from conveyor.service import Service
from conveyor.storage import open_storage
from conveyor.store import open_store

HERE = os.path.dirname(os.path.abspath(__file__))
PROCS = int(os.environ.get("BENCH_WORKER_PROCS", "2"))
KIND = "bench.io" if TASK_SLEEP_S else "bench.noop"


class NoopIn(BaseModel):
    tag: str | None = None


@conveyor.task("bench.noop", input=NoopIn, max_attempts=3, retry_backoff=0.1)
def noop(inp: NoopIn, ctx: conveyor.Context) -> None:
    signal_sync(inp.tag)


@conveyor.task("bench.io", input=NoopIn, max_attempts=3, retry_backoff=0.1)
async def io(inp: NoopIn, ctx: conveyor.Context) -> None:
    # signal_async's own client (redis-py 8: a pool of 100 connections that raises
    # MaxConnectionsError when all are busy) fails when hundreds of jobs wake at once, which a
    # library running <= 100 tasks per process never meets; the same wait and the same INCR /
    # RPUSH, through a pool that waits for a free connection instead.
    await asyncio.sleep(TASK_SLEEP_S)
    client = _clients.get(os.getpid())
    if client is None:
        import redis.asyncio as aioredis

        pool = aioredis.BlockingConnectionPool.from_url(benchtask.REDIS_URL, max_connections=100)
        client = _clients[os.getpid()] = aioredis.Redis(connection_pool=pool)
    if inp.tag is None:
        await client.incr(benchtask.COUNT_KEY)
    else:
        await client.rpush(benchtask.LAT_KEY, inp.tag)


_clients: dict[int, object] = {}


def store_url(variant: str, tmp: str) -> str:
    if variant == "postgres":
        return os.environ["BENCH_PG_DSN"]
    if variant == "redis":
        base = os.environ["BENCH_REDIS_URL"].rsplit("/", 1)[0]
        return f"{base}/1?allow_no_persistence=1"
    return f"sqlite:///{tmp}/conveyor.db"


class Driver:
    name = "conveyor"
    package = "conveyor"

    def __init__(self, variant):
        self.variant = variant or "sqlite"
        self.tmp = tempfile.mkdtemp(prefix="conveyor-peerbench-")
        self.url = store_url(self.variant, self.tmp)
        self.broker = {
            "sqlite": "SQLite (WAL, synchronous=FULL, temp file)",
            "postgres": "PostgreSQL 15 (own cluster)",
            "redis": "Redis (Lua; persistence off like the peers)",
        }[self.variant]
        self.service = None

    def worker_setup(self):
        how = f"async kind, up to {10_000 // PROCS:,} per child" if TASK_SLEEP_S else "sync kind"
        return (f"1 x `conveyor worker -c {PROCS}` (supervisor + {PROCS} child processes; "
                f"{how})")  # fmt: skip

    def worker_cmds(self):
        path = HERE + os.pathsep + os.environ.get("PYTHONPATH", "")
        env = [f"PYTHONPATH={path}", f"CONVEYOR_HOME={self.tmp}", "CONVEYOR_IMPORTS=q_conveyor"]
        worker = ["-m", "conveyor", "worker", "--store", self.url, "-c", str(PROCS)]
        return [["env", *env, sys.executable, *worker, "--log-level", "warning"]]

    async def prepare(self):
        store = open_store(self.url)
        store.register_kinds(import_kinds([]).infos())
        self.service = Service(store, open_storage(f"file://{self.tmp}/files"))

    async def open(self):
        pass

    async def enqueue_many(self, n, chunk, conc):
        done = 0
        while done < n:
            k = min(chunk, n - done)
            jobs = [NewJob(kind=KIND, input={"tag": None}) for _ in range(k)]
            await asyncio.to_thread(self.service.submit_many, jobs)
            done += k
        return f"bulk Service.submit_many x{chunk}"

    async def submit(self, tag):
        await asyncio.to_thread(self.service.submit, NewJob(kind=KIND, input={"tag": tag}))

    async def close(self):
        self.service.store.close()
