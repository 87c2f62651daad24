"""S19: untrusted payloads written straight into the store, past the API's validation.

The database is a trust boundary: rows read back are untrusted input. Jobs are enqueued through
the store, then their SQLite rows are overwritten with a pickle that would create a sentinel
file when unpickled, malformed JSON, an input that fails the kind's schema, an input naming a
handler by import path, a kind that is an import path, and a 10 MiB input. A burst worker then
runs everything it can claim next to good control jobs. Pass: 0 sentinel files, no handler
runs for a bad payload (the handler appends to a ledger), every bad payload ends failed with a
reason (or, for a kind no worker registers, is never claimed), and the control jobs succeed:
the worker keeps serving.

Dashboard auth/CSRF/escaping: tests/dashboard/test_security.py (every page needs a session,
actions check CSRF, HTML in input/result/error shown as text); this module adds queue names.
"""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from conveyor.ids import uuid7
from conveyor.models import JobState, KindInfo
from conveyor.store import open_store
from conveyor.store.base import JobSpec
from tests.integration.harness import start_worker, stop
from tests.reliability.security_results import record


class Sentinel:
    """Unpickling this creates the sentinel file (the attack the row carries)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def _ledger_jobs(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {json.loads(line)["job"] for line in path.read_text().splitlines() if line.strip()}


def _run(tmp_path: Path, undecodable: bool) -> tuple[list[str], dict[str, str], str, bool]:
    """Plant the bad rows, run a burst worker; (failures, outcomes, worker log, sentinel)."""
    home = tmp_path / "home"
    home.mkdir()
    sentinel = tmp_path / "PWNED"
    ledger = tmp_path / "ledger.jsonl"
    db = home / "conveyor.db"
    store_url = f"sqlite:///{db}"
    store = open_store(store_url)
    store.register_kinds([KindInfo(name="test.ledger")])
    good = {"ledger": str(ledger), "ms": 0}
    specs = [JobSpec(id=uuid7(), kind="test.ledger", queue="default", input=good,
                     run_at=store.now(), max_attempts=2) for _ in range(6)]  # fmt: skip
    ids = [job.id for job in store.enqueue(specs)]
    import_path = uuid7()
    command = {"command": f"touch {sentinel}"}
    store.enqueue([JobSpec(id=import_path, kind="os.system", queue="default", input=command,
                           run_at=store.now())])  # fmt: skip
    store.close()
    controls = ids[:3]
    evil_pickle = pickle.dumps(Sentinel(str(sentinel)))
    if undecodable:
        bad: dict[str, tuple[str, Any]] = {
            "pickle blob": (ids[3], evil_pickle),
            "pickle as text": (ids[4], evil_pickle.decode("latin-1")),
            "malformed JSON": (ids[5], '{"ledger": "'),
        }
    else:
        bad = {
            "schema violation": (ids[3], json.dumps({"ledger": 5, "ms": "x"})),
            "handler by import path": (ids[4], json.dumps(
                {"ledger": str(ledger), "ms": 0, "handler": "os:system",
                 "__class__": "subprocess.Popen", "args": ["touch", str(sentinel)]})),
            "10 MiB input": (ids[5], json.dumps(
                {"ledger": str(tmp_path / "big.jsonl"), "ms": 0, "pad": "x" * (10 << 20)})),
        }  # fmt: skip
    with sqlite3.connect(db) as conn:
        for job_id, value in bad.values():
            conn.execute("UPDATE jobs SET input = ? WHERE id = ?", (value, job_id))

    worker = start_worker(store_url, home, "--burst", "-c", "1")
    try:
        code = worker.wait(120)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        stop(worker)
    logs = "\n".join(p.read_text(errors="replace")[-1500:] for p in home.glob("worker-*.log"))

    store = open_store(store_url)
    failures: list[str] = []
    outcomes: dict[str, str] = {}
    try:
        for name, (job_id, _) in bad.items():
            try:
                job = store.get(job_id)
            except Exception as exc:  # a row the store cannot even read back
                outcomes[name] = f"unreadable ({type(exc).__name__})"
                failures.append(f"{name}: the store cannot read the row back ({exc!r:.120})")
                continue
            reason = job.error.message if job.error else ""
            short = " ".join(reason.split())[:50]
            outcomes[name] = f"{job.state.value}" + (f" ({short})" if reason else "")
            # valid for the schema (extra fields are ignored, never resolved as code): the
            # registered handler may run; the job must not wedge
            if name in ("10 MiB input", "handler by import path"):
                if job.state not in (JobState.SUCCEEDED, JobState.FAILED):
                    failures.append(f"{name}: left {job.state.value}")
            elif job.state is not JobState.FAILED or not reason:
                failures.append(f"{name}: {job.state.value}, reason {reason!r}")
        unknown = store.get(import_path)
        outcomes["kind by import path"] = f"{unknown.state.value}, never claimed"
        if unknown.state is not JobState.QUEUED or unknown.attempt != 0:
            failures.append(f"kind by import path was claimed: {unknown.state.value}")
        for job_id in controls:
            if store.get(job_id).state is not JobState.SUCCEEDED:
                failures.append(f"control {job_id}: {store.get(job_id).state.value}")
    finally:
        store.close()
    allowed = set(controls) | {bad[n][0] for n in ("handler by import path", "10 MiB input")
                               if n in bad}  # fmt: skip
    invoked_bad = _ledger_jobs(ledger) - allowed
    if invoked_bad:
        failures.append(f"handler ran for bad payloads {sorted(invoked_bad)}")
    if sentinel.exists():
        failures.append("the sentinel file exists")
    if code != 0:
        failures.append(f"burst worker exit code {code}")
    outcomes["worker exit"] = str(code)
    return failures, outcomes, logs, sentinel.exists()


def test_valid_json_bad_rows_fail_with_a_reason_and_the_worker_keeps_serving(
    tmp_path: Path,
) -> None:
    failures, outcomes, logs, planted = _run(tmp_path, undecodable=False)
    record("S19 untrusted rows (JSON)", len(outcomes) + 2, len(failures),
           "; ".join(f"{k}: {v}" for k, v in outcomes.items())
           + f"; 3 controls; sentinel files {int(planted)}")  # fmt: skip
    assert not failures, "\n".join(failures) + "\n" + logs


def test_undecodable_rows_fail_with_a_reason_and_the_worker_keeps_serving(
    tmp_path: Path,
) -> None:
    failures, outcomes, logs, planted = _run(tmp_path, undecodable=True)
    record("S19 untrusted rows (not JSON)", len(outcomes) + 2, len(failures),
           "; ".join(f"{k}: {v}" for k, v in outcomes.items())
           + f"; 3 controls; sentinel files {int(planted)} (orjson never unpickles)")  # fmt: skip
    assert not planted
    assert not failures, "\n".join(failures) + "\n" + logs
