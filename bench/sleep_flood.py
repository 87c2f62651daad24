"""The I/O-bound flood (#18): N `demo.sleep` jobs submitted at once to `conveyor up --demo`.

    python bench/sleep_flood.py [--n 10000] [--seconds 5] [--store URL] [-- up options]

Starts `conveyor up --demo` with default settings (a temp home, SQLite unless `--store`),
submits N jobs of `{"seconds": S}` over the HTTP API in batches of 500, and reports when the
last one succeeded (seconds after the first submit) and the peak RSS of the whole process tree
(the `up` process and its children), sampled every 100 ms. Target: 10,000 jobs of 5 s all
succeeded within 15 s, at most 1 GB. Writes bench/results/sleep_flood.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import httpx
from harness import ROOT, conveyor_env, free_port, start, stop

BATCH = 500


def tree_rss(root: int) -> int:
    """Resident memory of `root` and all its descendants, in bytes (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        kids = [child for child, parent in parents.items() if parent == pid]
        tree.update(kids)
        frontier.extend(kids)
    total = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            self.peak = max(self.peak, tree_rss(self.pid))


def wait_ready(url: str, process: object, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("conveyor up did not become ready")


def succeeded(client: httpx.Client) -> tuple[int, int]:
    """Jobs succeeded and failed so far, over every queue."""
    queues = client.get("/v1/queues").raise_for_status().json()
    return sum(q["succeeded"] for q in queues), sum(q["failed"] for q in queues)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--store", default=None, help="store URL (default: a temp SQLite file)")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("up_args", nargs="*", help="extra `conveyor up` options")
    args = parser.parse_args()

    load = Path("/proc/loadavg").read_text().split()[:3]
    home = Path(tempfile.mkdtemp(prefix="conveyor-flood-"))
    store = args.store or f"sqlite:///{home / 'conveyor.db'}"
    port = free_port()
    up = start("up", store, home, "--demo", "--port", str(port), *args.up_args,
               env=conveyor_env(home))  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    sampler = RssSampler(up.pid)
    try:
        wait_ready(url, up)
        time.sleep(2.0)  # let the worker's children finish starting: measure the jobs only
        sampler.start()
        job = {"kind": "demo.sleep", "input": {"seconds": args.seconds}}
        with httpx.Client(base_url=url, timeout=60) as client:
            first = time.monotonic()
            for start_at in range(0, args.n, BATCH):
                count = min(BATCH, args.n - start_at)
                client.post("/v1/jobs", json={"jobs": [job] * count}).raise_for_status()
            submitted = time.monotonic() - first
            done = failed = 0
            while done + failed < args.n and time.monotonic() - first < args.timeout:
                time.sleep(0.1)
                done, failed = succeeded(client)
            elapsed = time.monotonic() - first
    finally:
        sampler.done.set()
        stop(up)
    result = {
        "n": args.n,
        "seconds_each": args.seconds,
        "store": store.split(":", 1)[0],
        "submit_s": round(submitted, 2),
        "all_done_s": round(elapsed, 2),
        "succeeded": done,
        "failed": failed,
        "peak_rss_mb": round(sampler.peak / 2**20),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_before": load,
    }
    for key, value in result.items():
        print(f"{key:<16} {value}")
    target = args.n == 10_000 and args.seconds == 5
    if target:
        ok = done == args.n and elapsed <= 15 and sampler.peak <= 2**30
        print("target (all succeeded within 15 s, <= 1 GB):", "met" if ok else "NOT met")
    out = ROOT / "bench" / "results" / "sleep_flood.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
