"""Record linkage through the entity-service API: comparisons per second, 1 vs 2 workers.

Two parties' CLKs (1024-bit, synthetic: party B is party A with 5% of each record's bits
flipped, so every record has one true match) are uploaded through `/api/v1/…` of a real
`conveyor api`; a run (threshold 0.8, result type `groups`) is timed from its creation to
`completed` while `conveyor worker --concurrency N` processes the chunk sub-jobs and the solve.

- without blocking: all n x n comparisons (default n = 20,000 per party: 4e8 comparisons;
  the issue's 100,000 per party is 1e10 comparisons, about half an hour per run here);
- with blocking: records carry one of n/100 block ids (as a postcode block would), so about
  n x 100 comparisons; here n = 100,000 per party as the issue asks.

Each configuration runs with 1 and 2 worker processes; anonlink called directly in this process
on the same encodings is the baseline. Prints a table and writes bench/results/linkage.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from harness import ROOT, conveyor_env, start, start_api, stop

BITS = 1024
THRESHOLD = 0.8
SCHEMA = {"version": 3, "clkConfig": {"l": BITS, "kdf": {"type": "HKDF"}}, "features": []}


def encodings(n: int, seed: int) -> tuple[Any, Any, Any]:
    """Party A random CLKs; party B = A with 5% of bits flipped, rows shuffled (B's row j is
    entity `order[j]`); returns (a, b, order)."""
    rng = np.random.default_rng(seed)
    a = rng.random((n, BITS)) < 0.35
    b = a ^ (rng.random((n, BITS)) < 0.05)
    order = rng.permutation(n)
    return np.packbits(a, axis=1), np.packbits(b[order], axis=1), order


def b64(rows: np.ndarray[Any, Any]) -> list[str]:
    return [base64.b64encode(row.tobytes()).decode() for row in rows]


def one_run(args: argparse.Namespace, n: int, blocks: int | None, workers: int,
            a: Any, b: Any, order_b: Any) -> dict[str, Any]:  # fmt: skip
    chunk = args.chunk if blocks is None else args.chunk_blocked
    with tempfile.TemporaryDirectory(prefix="bench-linkage-") as tmp:
        home = Path(tmp)
        store_url = f"sqlite:///{home / 'conveyor.db'}"
        env = conveyor_env(home, imports="conveyor.kinds.linkage",
                           linkage_chunk_comparisons=str(chunk))  # fmt: skip
        api, url = start_api(store_url, home, env=env)
        worker = None
        try:
            http = httpx.Client(base_url=url, timeout=300)
            creds = http.post("/api/v1/projects", json={
                "schema": SCHEMA, "result_type": "groups", "uses_blocking": blocks is not None,
            }).json()  # fmt: skip
            pid = creds["project_id"]
            for party, (rows, token) in enumerate(zip((a, b), creds["update_tokens"],
                                                      strict=True)):  # fmt: skip
                body: dict[str, Any] = {"encodings": b64(rows)}
                if blocks is not None:
                    # Entity e sits in block e % blocks in both parties (B's rows are shuffled).
                    entity = np.arange(n) if party == 0 else order_b
                    body["blocks"] = {str(i): [str(int(e) % blocks)] for i, e in enumerate(entity)}
                r = http.post(f"/api/v1/projects/{pid}/clks", json=body,
                              headers={"Authorization": token})  # fmt: skip
                r.raise_for_status()
            auth = {"Authorization": creds["result_token"]}
            worker = start("worker", store_url, home, "--concurrency", str(workers), env=env)
            time.sleep(2)  # let the worker start its children before the clock starts
            load_before = os.getloadavg()[0]
            started = time.monotonic()
            run_id = http.post(f"/api/v1/projects/{pid}/runs", json={"threshold": THRESHOLD},
                               headers=auth).json()["run_id"]  # fmt: skip
            while True:
                status = http.get(f"/api/v1/projects/{pid}/runs/{run_id}/status",
                                  headers=auth).json()  # fmt: skip
                if status["state"] in ("completed", "error"):
                    break
                time.sleep(0.2)
            wall = time.monotonic() - started
            assert status["state"] == "completed", status
            groups = http.get(f"/api/v1/projects/{pid}/runs/{run_id}/result",
                              headers=auth).json()["groups"]  # fmt: skip
            # B's row j holds entity order_b[j]: a group [[0, i], [1, j]] is right if i == it.
            right = sum(1 for g in groups if len(g) == 2 and int(order_b[g[1][1]]) == g[0][1])
            comparisons = status["total_number_comparisons"]
            tag = f"linkage-run:{run_id}"
            jobs = http.get("/v1/jobs", params={"tag": tag, "limit": 1000}).json()["jobs"]
            chunks = sum(1 for j in jobs if j["kind"] == "linkage.compare")
            return {
                "records_per_party": n, "blocks": blocks, "worker_processes": workers,
                "comparisons": comparisons, "wall_s": round(wall, 2),
                "comparisons_per_s": round(comparisons / wall), "groups": len(groups),
                "correct_groups": right, "chunks": chunks, "chunk_comparisons": chunk,
                "load_avg_1m": [round(load_before, 1), round(os.getloadavg()[0], 1)],
            }  # fmt: skip
        finally:
            for process in (worker, api):
                if process is not None:
                    stop(process)


def direct(a: Any, b: Any) -> dict[str, Any]:
    """anonlink in one process on the same encodings (no blocking): the baseline."""
    from anonlink.candidate_generation import find_candidate_pairs
    from anonlink.similarities import dice_coefficient_accelerated
    from anonlink.solving import greedy_solve
    from bitarray import bitarray

    def bits(rows: Any) -> list[bitarray]:
        out = []
        for row in rows:
            ba = bitarray(endian="big")
            ba.frombytes(row.tobytes())
            out.append(ba)
        return out

    da, db = bits(a), bits(b)
    started = time.monotonic()
    found = find_candidate_pairs([da, db], dice_coefficient_accelerated, THRESHOLD)
    groups = greedy_solve(found)
    wall = time.monotonic() - started
    comparisons = len(da) * len(db)
    return {"records_per_party": len(da), "comparisons": comparisons, "wall_s": round(wall, 2),
            "comparisons_per_s": round(comparisons / wall), "groups": len(groups)}  # fmt: skip


def _dice_work(rows: Any, seconds: Any) -> None:
    from anonlink.similarities import dice_coefficient_accelerated
    from bitarray import bitarray

    clks = []
    for row in rows:
        ba = bitarray(endian="big")
        ba.frombytes(row.tobytes())
        clks.append(ba)
    started = time.monotonic()
    for _ in range(4):
        dice_coefficient_accelerated((clks, clks), THRESHOLD)
    seconds.put(time.monotonic() - started)


def calibrate() -> dict[str, float]:
    """The machine's parallelism right now: the same Dice work in 1 and in 2 bare processes.

    On a shared machine this, not conveyor, bounds what a second worker process can gain.
    """
    import multiprocessing

    rows = encodings(4000, seed=1)[0]
    ctx = multiprocessing.get_context("spawn")
    walls = {}
    for procs in (1, 2):
        queue = ctx.Queue()
        started = time.monotonic()
        children = [ctx.Process(target=_dice_work, args=(rows, queue)) for _ in range(procs)]
        for child in children:
            child.start()
        for child in children:
            child.join()
        walls[procs] = time.monotonic() - started
    return {"one_process_s": round(walls[1], 2), "two_processes_s": round(walls[2], 2),
            "speedup_of_2": round(2 * walls[1] / walls[2], 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="records per party, no blocking")
    parser.add_argument("--n-blocked", type=int, default=100_000, help="records, blocking")
    parser.add_argument("--chunk", type=int, default=20_000_000, help="comparisons per chunk")
    parser.add_argument("--chunk-blocked", type=int, default=1_250_000,
                        help="comparisons per chunk with blocking")  # fmt: skip
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "linkage.json"))
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    rows: list[dict[str, Any]] = []
    for n, blocks in ((args.n, None), (args.n_blocked, max(1, args.n_blocked // 100))):
        if not n:
            continue
        a, b, order_b = encodings(n, seed=n)
        for w in workers:
            row = one_run(args, n, blocks, w, a, b, order_b)
            rows.append(row)
            print(json.dumps(row), flush=True)
    baseline = direct(*encodings(args.n, seed=args.n)[:2])
    machine = calibrate()
    print(f"\n{'records':>9} {'blocks':>7} {'procs':>5} {'chunks':>6} {'comparisons':>15}"
          f" {'wall s':>7} {'cmp/s':>12} {'groups ok':>13} {'load':>9}")  # fmt: skip
    for r in rows:
        load = "→".join(str(x) for x in r["load_avg_1m"])
        print(f"{r['records_per_party']:>9} {r['blocks'] or '-':>7} {r['worker_processes']:>5}"
              f" {r['chunks']:>6} {r['comparisons']:>15,} {r['wall_s']:>7}"
              f" {r['comparisons_per_s']:>12,} {r['correct_groups']:>6}/{r['records_per_party']}"
              f" {load:>9}")  # fmt: skip
    print(f"{baseline['records_per_party']:>9} {'-':>7} {'direct':>5} {'-':>6}"
          f" {baseline['comparisons']:>15,} {baseline['wall_s']:>7}"
          f" {baseline['comparisons_per_s']:>12,}  (anonlink in one process)")  # fmt: skip
    print(f"\nbare Dice work, same total per process: 1 process {machine['one_process_s']} s,"
          f" 2 processes {machine['two_processes_s']} s -> a second process gives"
          f" x{machine['speedup_of_2']} throughput on this machine now")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "threshold": THRESHOLD, "chunk_comparisons": args.chunk, "runs": rows,
        "direct_anonlink": baseline, "parallelism_now": machine,
    }, indent=2))  # fmt: skip
    print(f"\nwrote {out}")


if __name__ == "__main__":
    random.seed(0)
    main()
