"""What the kge API tests share: PyKEEN's bundled Nations triples, and a running API with a real
`conveyor worker` process on the `kge` queue (`running_api`)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from conveyor.store import Store
from tests.integration.harness import start_worker, stop, wait_for, worker_env
from tests.servers.conveyor_api import sqlite_api_in_thread


def nations() -> list[tuple[str, str, str]]:
    import pykeen.datasets

    folder = Path(pykeen.datasets.__file__).parent / "nations"
    rows = []
    for name in ("train.txt", "valid.txt", "test.txt"):
        for line in (folder / name).read_text().splitlines():
            s, p, o = line.split("\t")
            rows.append((s, p, o))
    return rows


def as_json(triples: list[tuple[str, str, str]]) -> dict[str, Any]:
    return {
        "triples": [
            {"subject": {"value": s}, "predicate": {"value": p}, "object": {"value": o}}
            for s, p, o in triples
        ]
    }


@dataclass
class Env:
    http: httpx.Client
    store: Store
    worker: subprocess.Popen[bytes]

    def dataset(self, name: str, triples: list[tuple[str, str, str]] | None = None) -> int:
        r = self.http.post("/kge/datasets/", json={"name": name, "description": "test"})
        assert r.status_code == 201, r.text
        dataset_id = int(r.json()["dataset"]["id"])
        assert r.headers["location"] == f"/kge/datasets/{dataset_id}"
        if triples:
            r = self.http.post(f"/kge/datasets/{dataset_id}/triples", json=as_json(triples))
            assert r.status_code == 202, r.text
        return dataset_id

    def algorithm(self, **params: Any) -> int:
        r = self.http.post("/kge/algorithms/", json={"algorithm": params})
        assert r.status_code == 201, r.text
        return int(r.json()["algorithm"]["id"])

    def task(self, task_id: str) -> dict[str, Any]:
        r = self.http.get(f"/kge/tasks/{task_id}", params={"no_redirect": "true"})
        assert r.status_code == 200, r.text
        return dict(r.json()["task"])

    def finish(self, task_id: str, timeout: float = 150) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []

        def done() -> bool:
            seen.append(self.task(task_id))
            return seen[-1]["state"] in ("SUCCESS", "FAILURE", "REVOKED")

        wait_for(done, timeout, interval=0.05)
        return seen


@contextmanager
def running_api(tmp: Path, **worker_settings: str) -> Iterator[Env]:
    """The API (uvicorn, in this process) and one worker process with `worker_settings`
    (`CONVEYOR_*` variables) in its environment."""
    with ExitStack() as stack:
        api = stack.enter_context(sqlite_api_in_thread(tmp))
        worker = start_worker(
            api.store_url, api.home, "--queues", "kge", "--concurrency", "1",
            env=worker_env(api.home, CONVEYOR_IMPORTS="conveyor.kinds.kge", **worker_settings),
        )  # fmt: skip
        stack.callback(stop, worker)
        http = stack.enter_context(httpx.Client(base_url=api.url, timeout=60))
        yield Env(http, api.store, worker)
