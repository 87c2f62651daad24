"""The code examples in the docs run, through a real worker."""

from __future__ import annotations

from pathlib import Path

from conveyor.kinds.registry import import_kinds
from conveyor.models import JobState, NewJob
from conveyor.service import Service
from conveyor.storage import open_storage
from conveyor.store import open_store
from tests.integration.harness import start_worker, worker_env


def test_word_report_example(tmp_path: Path) -> None:
    home = tmp_path / "home"
    url = f"sqlite:///{home / 'conveyor.db'}"
    store = open_store(url)
    store.register_kinds(import_kinds(["examples.word_report"]).infos())
    service = Service(store, open_storage(f"file://{home / 'files'}"))
    job = service.submit(NewJob(kind="examples.word_report", input={"words": ["a", "b", "a"]}))
    env = worker_env(home, CONVEYOR_IMPORTS="examples.word_report")
    worker = start_worker(url, home, "--burst", "-c", "1", env=env)
    assert worker.wait(60) == 0
    done = service.get(job.id)
    assert done.state is JobState.SUCCEEDED
    assert done.result == {"total": 3, "common": [["a", 2], ["b", 1]]}
    info, chunks = service.download(job.id, "counts.tsv")
    assert b"".join(chunks) == b"a\t2\nb\t1\n"
    assert info.size == 8
