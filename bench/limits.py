"""Claim throughput under a per-key concurrency limit (#20), store calls alone.

    python bench/limits.py --store sqlite|postgres|redis [--jobs 20000] [--keys 1000]
                           [--batch 100] [--max-running 5] [--rounds 3] [--mode both|plain]

Each round fills an empty store with `--jobs` jobs spread over `--keys` concurrency keys, then
claims them `--batch` at a time, settling each batch as succeeded before the next claim (so at
most one batch runs, as with a worker that keeps up), once with no limit and once with
`key:bench.noop` `max_running` set. It reports the claim time per job (only the claim calls are
timed) and the ratio of the two throughputs; issue #20's target is >= 0.7. `--mode plain`
submits jobs without keys and sets no limit: the claim path of a store that uses no limits, to
compare against another checkout of conveyor. PostgreSQL and Redis are private throwaway
servers (tests/servers). Writes bench/results/limits.json.
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
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conveyor.ids import uuid7  # noqa: E402
from conveyor.store import JobSpec, Outcome, Settlement, Store, open_store  # noqa: E402


@contextlib.contextmanager
def store_url(name: str) -> Iterator[str]:
    if name == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.db"
    elif name == "postgres":
        from tests.servers.postgres import running_server

        with running_server() as server:
            yield server.create_schema()
    else:
        from tests.servers.redis import running_redis

        with running_redis() as server:
            yield server.url


def fill(store: Store, jobs: int, keys: int | None) -> None:
    now = time.time()
    for start in range(0, jobs, 1000):
        # (no concurrency_key argument at all without keys: older JobSpecs have none)
        extra = [{} if keys is None else {"concurrency_key": f"tenant-{i % keys}"}
                 for i in range(start, min(jobs, start + 1000))]  # fmt: skip
        store.enqueue([
            JobSpec(id=uuid7(), kind="bench.noop", queue="default", input={}, run_at=now, **more)
            for more in extra
        ])  # fmt: skip


def drain(store: Store, jobs: int, batch: int) -> tuple[float, int]:
    """Claim and settle everything; (seconds spent in claim calls, claims made)."""
    spent, claims, done = 0.0, 0, 0
    while done < jobs:
        started = time.perf_counter()
        claimed = store.claim(["default"], "bench", batch, 60.0)
        spent += time.perf_counter() - started
        claims += 1
        if not claimed:
            raise SystemExit(f"a claim found nothing with {jobs - done} jobs left")
        store.settle([Settlement(j.id, j.lease.token, Outcome.SUCCEEDED)
                      for j in claimed if j.lease])  # fmt: skip
        done += len(claimed)
    return spent, claims


def run(url: str, args: argparse.Namespace, limited: bool) -> dict[str, float]:
    store = open_store(url)
    try:
        if limited:
            from conveyor.models import Limit

            store.set_limit(Limit(target="key:bench.noop", max_running=args.max_running))
        fill(store, args.jobs, None if args.mode == "plain" else args.keys)
        spent, claims = drain(store, args.jobs, args.batch)
        if limited:
            store.delete_limit("key:bench.noop")
        store.prune(time.time() + 86_400, limit=args.jobs * 2)
    finally:
        store.close()
    return {"claim_us_per_job": spent / args.jobs * 1e6, "claims": claims,
            "jobs_per_s": args.jobs / spent}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["sqlite", "postgres", "redis"], default="sqlite")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--max-running", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mode", choices=["both", "plain"], default="both")
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {"unlimited": [], "limited": []}
    with store_url(args.store) as url:
        for _ in range(args.rounds):
            rows["unlimited"].append(run(url, args, limited=False))
            if args.mode == "both":
                rows["limited"].append(run(url, args, limited=True))
    load = os.getloadavg()
    result: dict[str, object] = {
        "store": args.store, "jobs": args.jobs, "keys": args.keys, "batch": args.batch,
        "max_running": args.max_running, "mode": args.mode, "rounds": rows,
        "load_average": [round(x, 2) for x in load], "python": platform.python_version(),
        "at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }  # fmt: skip
    print(f"{args.store}, {args.jobs} jobs, batch {args.batch}, load {load[0]:.1f}")
    medians = {}
    for mode, runs in rows.items():
        if runs:
            medians[mode] = statistics.median(r["jobs_per_s"] for r in runs)
            per_job = ", ".join(f"{r['claim_us_per_job']:.0f}" for r in runs)
            print(f"  {mode:9} claim µs/job per round: {per_job}; median {medians[mode]:,.0f}"
                  " jobs/s")  # fmt: skip
    if len(medians) == 2:
        ratio = medians["limited"] / medians["unlimited"]
        result["ratio"] = round(ratio, 3)
        print(f"  limited / unlimited: {ratio:.2f} (target >= 0.7)")
    out = ROOT / "bench" / "results" / "limits.json"
    stored = json.loads(out.read_text()) if out.exists() else {}
    stored[f"{args.store}-{args.mode}"] = result
    out.write_text(json.dumps(stored, indent=2) + "\n")


if __name__ == "__main__":
    main()
