"""PostgreSQL claim latency with an empty history vs 1,000,000 finished jobs in the table.

    python bench/postgres_claims.py [--rows 1000000] [--rounds 200] [--dsn postgresql://…]

Without `--dsn` (or `BENCH_PG_DSN`) a private throwaway PostgreSQL is started in a temp dir
(the test fixture's server) and removed afterwards. For each batch size, jobs are enqueued and
then claimed and settled (succeeded) batch by batch through `PostgresStore`, timing each
`claim` and each `settle` call. Then `--rows` finished jobs are bulk-inserted with
`generate_series` (plus `VACUUM ANALYZE`, as autovacuum would do) and the same measurement runs
again. Prints a table and writes bench/results/postgres_claims.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import postgres_database  # noqa: E402

from conveyor.ids import uuid7  # noqa: E402
from conveyor.store import JobSpec, Outcome, Settlement  # noqa: E402
from conveyor.store.postgres import PostgresStore  # noqa: E402

BATCHES = (1, 10, 50)

FILL = """
INSERT INTO conveyor_jobs (id, kind, queue, state, input, priority, run_at, attempt,
    max_attempts, backoff_s, result, tags, created_at, started_at, finished_at, updated_at)
SELECT 'done-' || lpad(g::text, 9, '0'), 'noop', 'default', 'succeeded', '{}', 0, t, 1, 3, 1.0,
    'null', '[]', t, t, t + interval '5 ms', t + interval '5 ms'
FROM generate_series(1, %(rows)s) AS g,
    LATERAL (SELECT now() - interval '2 days' + g * interval '1 ms' AS t) AS at
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(store: PostgresStore, batch: int, rounds: int) -> dict[str, float]:
    now = store.now()
    total = batch * rounds
    for start in range(0, total, 1000):
        store.enqueue([JobSpec(id=uuid7(), kind="noop", queue="default", input={}, run_at=now)
                       for _ in range(min(1000, total - start))])  # fmt: skip
    claims: list[float] = []
    settles: list[float] = []
    done = 0
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        jobs = store.claim(["default"], "bench", batch, 60.0)
        t1 = time.perf_counter()
        if not jobs:
            break
        store.settle([Settlement(j.id, j.lease.token if j.lease else "", Outcome.SUCCEEDED)
                      for j in jobs])  # fmt: skip
        t2 = time.perf_counter()
        claims.append((t1 - t0) * 1000)
        settles.append((t2 - t1) * 1000)
        done += len(jobs)
    elapsed = time.perf_counter() - started
    return {
        "batch": batch,
        "claims": len(claims),
        "claim_p50_ms": round(statistics.median(claims), 2),
        "claim_p95_ms": round(pct(claims, 0.95), 2),
        "settle_p50_ms": round(statistics.median(settles), 2),
        "settle_p95_ms": round(pct(settles, 0.95), 2),
        "jobs_per_s": round(done / elapsed),
    }


def explain_claim(dsn: str) -> str:
    """The plan of the claim's pick: it must be an index scan on the ready index."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "EXPLAIN SELECT id FROM conveyor_jobs WHERE state IN ('queued', 'scheduled')"
            " AND queue = 'default' AND run_at <= now() ORDER BY priority DESC, run_at, id"
            " LIMIT 10 FOR UPDATE SKIP LOCKED"
        ).fetchall()
        conn.rollback()
    return "\n".join(r[0] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="finished rows to add")
    parser.add_argument("--rounds", type=int, default=200, help="claims per batch size")
    parser.add_argument("--dsn", default=os.environ.get("BENCH_PG_DSN"))
    args = parser.parse_args()

    results: dict[str, object] = {"rows": args.rows, "rounds": args.rounds,
                                  "machine": platform.node(), "cpus": os.cpu_count()}  # fmt: skip
    with postgres_database(args.dsn) as dsn:
        store = PostgresStore.from_url(dsn)
        try:
            empty = [measure(store, b, args.rounds) for b in BATCHES]
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("DELETE FROM conveyor_events")
                conn.execute("DELETE FROM conveyor_jobs")
                t0 = time.perf_counter()
                conn.execute(FILL, {"rows": args.rows})
                conn.execute("VACUUM ANALYZE conveyor_jobs")
                fill_s = time.perf_counter() - t0
                size = conn.execute(
                    "SELECT pg_size_pretty(pg_total_relation_size('conveyor_jobs'))"
                ).fetchone()
            plan = explain_claim(dsn)
            full = [measure(store, b, args.rounds) for b in BATCHES]
        finally:
            store.close()
    results.update(empty=empty, full=full, fill_s=round(fill_s, 1),
                   table_size=size[0] if size else None, claim_plan=plan)  # fmt: skip

    print(f"PostgreSQL claims: empty table vs {args.rows:,} finished jobs "
          f"(filled in {fill_s:.0f}s, jobs table {results['table_size']})")  # fmt: skip
    header = ("batch", "finished rows", "claim p50 ms", "claim p95 ms", "settle p50 ms",
              "settle p95 ms", "jobs/s")  # fmt: skip
    print(" | ".join(f"{h:>13}" for h in header))
    for rows, runs in ((0, empty), (args.rows, full)):
        for r in runs:
            cells = (r["batch"], f"{rows:,}", r["claim_p50_ms"], r["claim_p95_ms"],
                     r["settle_p50_ms"], r["settle_p95_ms"], r["jobs_per_s"])  # fmt: skip
            print(" | ".join(f"{c:>13}" for c in cells))
    print("claim plan:\n" + plan)
    out = ROOT / "bench" / "results" / "postgres_claims.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
