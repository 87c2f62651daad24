"""HTTP API benchmark: submit throughput (single and batched), latency, SSE fan-out.

    python bench/api.py [--singles 6000] [--clients 32] [--batches 40] [--watchers 500]

Runs, side by side in one go, against a real `conveyor api` process (uvicorn) on a fresh
SQLite store in its durable setting (WAL, synchronous=FULL) and a real `conveyor worker`:

1. single submits: `--clients` concurrent keep-alive connections each POSTing one `noop` job
   at a time (a minimal raw HTTP/1.1 client, so the generator does not measure httpx);
2. batched submits: `{"jobs": [500 x noop]}` from 4 concurrent clients;
3. latency on an idle system: submit one `noop`, follow its SSE stream until it ends; p50/p99
   of that client-observed time, and of the server's own created -> finished time;
4. SSE fan-out: `--watchers` concurrent streams, one per job, all following to the end.

The load generator shares the machine with the server (2 cores here), so the figures are a
floor. Prints a table and writes bench/results/api.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from harness import ROOT, conveyor_env, start, start_api, stop


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class RawConnection:
    """A minimal keep-alive HTTP/1.1 client: the load generator shares the CPU with the server,
    and httpx costs more per request than the server does, so it would measure itself."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> RawConnection:
        host, port = url.removeprefix("http://").split(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def singles(url: str, total: int, clients: int) -> dict[str, Any]:
    counter = iter(range(total))
    latencies: list[float] = []
    errors = 0
    body = json.dumps({"kind": "noop", "queue": "bench"}).encode()
    connections = [await RawConnection.open(url) for _ in range(clients)]

    async def client(conn: RawConnection) -> None:
        nonlocal errors
        for _ in counter:
            t0 = time.perf_counter()
            status, _ = await conn.post("/v1/jobs", body)
            latencies.append(time.perf_counter() - t0)
            errors += status != 201

    start_t = time.perf_counter()
    await asyncio.gather(*(client(c) for c in connections))
    elapsed = time.perf_counter() - start_t
    for conn in connections:
        conn.close()
    return {
        "requests": total,
        "clients": clients,
        "seconds": round(elapsed, 3),
        "per_s": round(total / elapsed),
        "errors": errors,
        "p50_ms": round(pct(latencies, 0.5) * 1000, 2),
        "p99_ms": round(pct(latencies, 0.99) * 1000, 2),
    }


async def batches(url: str, count: int, size: int, clients: int = 4) -> dict[str, Any]:
    body = {"jobs": [{"kind": "noop", "queue": "bench"}] * size}
    payload = json.dumps(body).encode()
    counter = iter(range(count))
    errors = 0
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:

        async def client() -> None:
            nonlocal errors
            for _ in counter:
                r = await http.post(
                    "/v1/jobs", content=payload, headers={"content-type": "application/json"}
                )
                errors += r.status_code != 201

        start_t = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - start_t
    jobs = count * size
    return {
        "batches": count,
        "batch_size": size,
        "jobs": jobs,
        "seconds": round(elapsed, 3),
        "jobs_per_s": round(jobs / elapsed),
        "errors": errors,
    }


def follow_until_final(http: httpx.Client, job_id: str) -> dict[str, Any]:
    last: dict[str, Any] = {}
    with http.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                last = json.loads(line[5:])
    return last


def latency(url: str, n: int) -> dict[str, Any]:
    observed: list[float] = []
    server: list[float] = []
    with httpx.Client(base_url=url, timeout=60) as http:
        for _ in range(10):  # warm up: the worker's children are started and have run jobs
            job = http.post("/v1/jobs", json={"kind": "noop"}).json()
            follow_until_final(http, job["id"])
        for _ in range(n):
            t0 = time.perf_counter()
            job = http.post("/v1/jobs", json={"kind": "noop"}).json()
            final = follow_until_final(http, job["id"])
            observed.append(time.perf_counter() - t0)
            assert final["data"]["state"] == "succeeded", final
            done = http.get(f"/v1/jobs/{job['id']}").json()
            created = _ts(done["created_at"])
            server.append(_ts(done["finished_at"]) - created)
            time.sleep(0.02)  # idle between samples
    return {
        "samples": n,
        "observed_p50_ms": round(statistics.median(observed) * 1000, 2),
        "observed_p99_ms": round(pct(observed, 0.99) * 1000, 2),
        "server_p50_ms": round(statistics.median(server) * 1000, 2),
        "server_p99_ms": round(pct(server, 0.99) * 1000, 2),
    }


def _ts(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def fanout(url: str, watchers: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=watchers + 10, max_keepalive_connections=watchers + 10)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
        body = {"jobs": [{"kind": "noop", "queue": "fan", "delay_s": 3}] * watchers}
        jobs = (await http.post("/v1/jobs", json=body)).json()["jobs"]
        opened = 0
        errors = 0
        ends: list[float] = []
        all_open = asyncio.Event()
        failures: list[str] = []
        reconnects = 0

        async def watch(job_id: str) -> None:
            nonlocal opened, errors, reconnects
            final = None
            for attempt in range(3):
                try:
                    async with http.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
                        if attempt == 0:
                            opened += 1
                            if opened == watchers:
                                all_open.set()
                        async for line in stream.aiter_lines():
                            if line.startswith("data:"):
                                final = json.loads(line[5:])
                    break
                except httpx.RemoteProtocolError:  # a pooled connection the server had closed
                    reconnects += 1
                except httpx.HTTPError as exc:
                    errors += 1
                    failures.append(type(exc).__name__)
                    return
            if not final or final["data"].get("state") != "succeeded":
                errors += 1
            ends.append(time.perf_counter())

        start_t = time.perf_counter()
        tasks = [asyncio.create_task(watch(j["id"])) for j in jobs]
        opener = asyncio.create_task(all_open.wait())
        await asyncio.wait([opener, asyncio.gather(*tasks)], return_when=asyncio.FIRST_COMPLETED)
        open_s = time.perf_counter() - start_t
        await asyncio.gather(*tasks)
        opener.cancel()
        total_s = time.perf_counter() - start_t
    return {
        "watchers": watchers,
        "errors": errors,
        "failures": sorted(set(failures)),
        "reconnects": reconnects,
        "completed": len(ends),
        "seconds_to_open_all": round(open_s, 3),
        "seconds_total": round(total_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--singles", type=int, default=6000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--latency-n", type=int, default=200)
    parser.add_argument("--watchers", type=int, default=500)
    parser.add_argument("--processes", type=int, default=1, help="API server processes")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "api.json"))
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="conveyor-bench-api-"))
    store = f"sqlite:///{home / 'bench.db'}"
    env = conveyor_env(home, imports="conveyor.kinds.demo")
    api, url = start_api(store, home, "--processes", str(args.processes), env=env)
    worker: subprocess.Popen[bytes] | None = None
    try:
        results: dict[str, Any] = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}
        }
        results["api_processes"] = args.processes
        results["single"] = asyncio.run(singles(url, args.singles, args.clients))
        results["batched"] = asyncio.run(batches(url, args.batches, args.batch_size))
        worker = start("worker", store, home, "--queues", "default,fan", "-c", "2", env=env)
        results["latency"] = latency(url, args.latency_n)
        results["sse"] = asyncio.run(fanout(url, args.watchers))
    finally:
        if worker is not None:
            stop(worker)
        stop(api)
    report(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")


def report(r: dict[str, Any]) -> None:
    s, b, lat, sse = r["single"], r["batched"], r["latency"], r["sse"]
    rows = [
        (
            "single submits, 32 clients",
            f"{s['per_s']:,}/s",
            ">= 1,500/s",
            f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, errors {s['errors']}",
        ),
        (
            f"batched submits ({b['batch_size']}/request)",
            f"{b['jobs_per_s']:,} jobs/s",
            ">= 15,000/s",
            f"{b['batches']} batches, errors {b['errors']}",
        ),
        (
            "noop submit -> finished (client, SSE)",
            f"p50 {lat['observed_p50_ms']} ms",
            "p50 <= 10 ms",
            f"p99 {lat['observed_p99_ms']} ms",
        ),
        (
            "noop created -> finished (server)",
            f"p50 {lat['server_p50_ms']} ms",
            "",
            f"p99 {lat['server_p99_ms']} ms",
        ),
        (
            f"SSE watchers ({sse['watchers']})",
            f"{sse['completed']} completed",
            "no errors",
            f"errors {sse['errors']}, reconnects {sse['reconnects']},"
            f" all open in {sse['seconds_to_open_all']} s",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    header = ("measure", "result", "target", "detail")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    for row in (header, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
