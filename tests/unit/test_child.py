"""A worker child on its own (in a thread, over a real pipe): how it reports outcomes."""

from __future__ import annotations

import threading
import time
from ctypes import c_double
from multiprocessing import Pipe, RawArray
from pathlib import Path
from typing import Any

import orjson

from conveyor.kinds.registry import import_kinds
from conveyor.storage import open_storage
from conveyor.worker.child import SEQ, Child
from tests.integration.harness import wait_for


def run_message(job_id: str, seq: int, kind: str, input: dict[str, Any]) -> dict[str, Any]:
    return {"id": job_id, "seq": seq, "kind": kind, "input": input, "attempt": 1}


def test_outcomes_held_behind_a_long_job_are_sent_within_the_hold_time(tmp_path: Path) -> None:
    supervisor, end = Pipe()
    registry = import_kinds(["conveyor.kinds.demo", "tests.testkinds"])
    child = Child(end, registry, open_storage(f"file://{tmp_path}/blobs"), RawArray(c_double, 3))
    # Both kinds are known to be short, so the child holds the no-ops' outcomes back when the
    # blocking job starts: that one runs long although its kind usually does not.
    child.runtime.update({"noop": 1e-4, "test.block": 1e-4})
    quick = [run_message(f"n{i}", i + 1, "noop", {}) for i in range(3)]
    slow = run_message("slow", 4, "test.block", {"dir": str(tmp_path)})
    supervisor.send_bytes(orjson.dumps({"op": "run_many", "jobs": [*quick, slow]}))
    server = threading.Thread(target=child.serve, daemon=True)
    server.start()

    reported: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(reported) < len(quick) and supervisor.poll(max(0.0, deadline - time.monotonic())):
        reported.extend(orjson.loads(supervisor.recv_bytes())["jobs"])
    assert [r["id"] for r in reported] == ["n0", "n1", "n2"]
    assert all(r["outcome"] == "succeeded" for r in reported)
    # ...while the long job is still running: it started (shared marker) and has not ended.
    assert child.shared[SEQ] == 4
    assert wait_for(lambda: (tmp_path / "job.1.started").exists(), timeout=10)

    (tmp_path / "release").touch()
    assert supervisor.poll(10)
    [last] = orjson.loads(supervisor.recv_bytes())["jobs"]
    assert (last["id"], last["outcome"]) == ("slow", "succeeded")
    supervisor.send_bytes(orjson.dumps({"op": "stop"}))
    server.join(10)
    assert not server.is_alive()
