"""Task Queue v1beta2 and render benchmark.

    python bench/taskqueue.py [--tasks 5000] [--leasers 10] [--num-tasks 100] [--renders 20]

1. Lease/delete round trips through the v1beta2 HTTP API of a real `conveyor api` process
   (SQLite store): `--leasers` threads each lease `--num-tasks` tasks at a time and delete
   each one, until the queue is empty, as the original render daemons did.
2. PDFs rendered per second on one core (one process, in-process WeasyPrint) per resource.

Prints a table and writes bench/results/taskqueue.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from harness import ROOT, start_api, stop

from conveyor.kinds.render.document import render_document
from conveyor.kinds.render.payload import parse_task
from conveyor.storage import open_storage
from conveyor.store import open_store
from conveyor.taskqueue.names import QueueRef
from conveyor.taskqueue.service import TaskQueueService

QUEUE = "/taskqueue/v1beta2/projects/b~bench/taskqueues/render-queue"


def leaser(url: str, num_tasks: int, counts: list[int], latencies: list[float]) -> None:
    with httpx.Client(base_url=url, timeout=60) as http:
        while True:
            started = time.perf_counter()
            answer = http.post(
                f"{QUEUE}/tasks/lease", params={"numTasks": num_tasks, "leaseSecs": 300}
            )
            latencies.append(time.perf_counter() - started)
            answer.raise_for_status()
            items = answer.json().get("items", [])
            if not items:
                return
            for task in items:
                http.delete(f"{QUEUE}/tasks/{task['id']}").raise_for_status()
            counts.append(len(items))


def bench_leases(args: argparse.Namespace, home: Path) -> dict[str, float]:
    store_url = f"sqlite:///{home / 'conveyor.db'}"
    store = open_store(store_url)
    tq = TaskQueueService(store, open_storage(f"file://{home / 'files'}"))
    ref = QueueRef.parse("bench", "render-queue")
    payload = "eyJraW5kIjogInRhc2sjcmVuZGVyIn0="  # {"kind": "task#render"}
    for _ in range(args.tasks):
        tq.insert_task(ref, payload, "raw")
    store.close()
    process, url = start_api(store_url, home)
    try:
        counts: list[int] = []
        latencies: list[float] = []
        threads = [threading.Thread(target=leaser, args=(url, args.num_tasks, counts, latencies))
                   for _ in range(args.leasers)]  # fmt: skip
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    finally:
        stop(process)
    done = sum(counts)
    assert done == args.tasks, f"{done} of {args.tasks} tasks leased and deleted"
    return {
        "tasks": done,
        "seconds": round(elapsed, 2),
        "tasks_per_s": round(done / elapsed, 1),
        "requests_per_s": round((done + len(latencies)) / elapsed, 1),
        "lease_calls": len(latencies),
        "lease_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "lease_max_ms": round(max(latencies) * 1000, 1),
    }


RESOURCES = {
    "binary_cards": {},
    "sorting_network": {"values": "numbers"},
    "modulo_clock": {"modulo": 12},
    "parity_cards": {"back_colour": "blue"},
}


def bench_renders(n: int) -> dict[str, dict[str, float]]:
    results = {}
    for view, options in RESOURCES.items():
        task = parse_task({"kind": "task#render", "resource_slug": view, "resource_name": view,
                           "resource_view": view, "url": "https://example.org", "header_text":
                           "Benchmark", "copies": 1, "paper_size": "a4", **options})  # fmt: skip
        render_document(task)  # warm up: fonts and templates load once per process
        started = time.perf_counter()
        cpu = time.process_time()
        for _ in range(n):
            document = render_document(task)
        elapsed = time.perf_counter() - started
        cpu_s = time.process_time() - cpu
        results[view] = {
            "pages": document.pages,
            "bytes": len(document.pdf),
            "pdfs_per_s": round(n / elapsed, 2),
            "pdfs_per_cpu_s": round(n / cpu_s, 2),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--leasers", type=int, default=10)
    parser.add_argument("--num-tasks", type=int, default=100)
    parser.add_argument("--renders", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "taskqueue.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        leases = bench_leases(args, Path(tmp))
    renders = bench_renders(args.renders)
    print(f"lease/delete through v1beta2: {args.leasers} leasers, numTasks {args.num_tasks}")
    print(f"  {'tasks':>7} {'seconds':>8} {'tasks/s':>8} {'requests/s':>11} {'lease p50 ms':>13}"
          f" {'lease max ms':>13}")  # fmt: skip
    print(f"  {leases['tasks']:>7} {leases['seconds']:>8} {leases['tasks_per_s']:>8}"
          f" {leases['requests_per_s']:>11} {leases['lease_p50_ms']:>13}"
          f" {leases['lease_max_ms']:>13}")  # fmt: skip
    print("PDFs rendered on one core (A4, 1 copy)")
    print(f"  {'resource':<16} {'pages':>5} {'bytes':>7} {'PDFs/s':>7} {'PDFs/CPU-s':>11}")
    for view, r in renders.items():
        print(f"  {view:<16} {r['pages']:>5} {r['bytes']:>7} {r['pdfs_per_s']:>7}"
              f" {r['pdfs_per_cpu_s']:>11}")  # fmt: skip
    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "settings": {
            "tasks": args.tasks,
            "leasers": args.leasers,
            "num_tasks": args.num_tasks,
            "renders": args.renders,
        },
        "lease_delete": leases,
        "render": renders,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
