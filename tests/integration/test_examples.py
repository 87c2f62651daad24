"""The code examples in the docs run, through a real worker."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from conveyor.kinds.registry import import_kinds
from conveyor.models import JobState, NewJob
from conveyor.service import Service
from conveyor.storage import open_storage
from conveyor.store import open_store
from tests.integration.harness import ROOT, start_worker, stop, wait_for, worker_env


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


DOC = ROOT / "docs" / "howto" / "write-a-kind.md"


def _block(text: str, language: str) -> str:
    start = text.index(f"```{language}\n") + len(language) + 4
    return text[start : text.index("```", start)]


def test_write_a_kind_page_works_as_written(tmp_path: Path) -> None:
    """A newcomer saves the page's code in a folder of their own and runs its two commands
    there, with the `conveyor` script (no `python -m`, so the folder is not on sys.path):
    `No module named 'examples'` / `'word_report'` used to be all they got."""
    text = DOC.read_text()
    code = _block(text, "python")
    assert code == (ROOT / "examples" / "word_report.py").read_text(), "the page's code drifted"
    assert "--8<--" not in text, "raw Markdown (GitHub) shows snippet markers, not code"
    (tmp_path / "word_report.py").write_text(code)
    lines = _block(text, "console").splitlines()
    commands = [shlex.split(line[2:]) for line in lines if line.startswith("$ ")]
    expected = json.loads(next(line for line in lines if not line.startswith("$ ")))
    worker_args, submit_args = commands
    assert worker_args[0] == submit_args[0] == "conveyor"
    # -P: like the installed `conveyor` script, the current folder is not put on sys.path.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(PYTHONPATH=str(ROOT / "src"), COLUMNS="200")
    cli = [sys.executable, "-P", "-m", "conveyor"]
    worker = subprocess.Popen(
        [*cli, *worker_args[1:], "-c", "1"], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        db = tmp_path / ".conveyor" / "conveyor.db"

        def registered() -> bool:
            if worker.poll() is not None:
                raise AssertionError(worker.stdout.read() if worker.stdout else "worker died")
            if not db.exists():
                return False
            store = open_store(f"sqlite:///{db}")
            try:
                return "examples.word_report" in {k.name for k in store.kinds()}
            finally:
                store.close()

        wait_for(registered, timeout=60, interval=0.2, what="the worker to register the kind")
        submitted = subprocess.run(
            [*cli, *submit_args[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        assert json.loads(submitted.stdout) == expected
    finally:
        stop(worker)
