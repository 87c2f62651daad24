"""The linkage kinds read and write through `ctx.storage`, whatever the environment says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conveyor.kinds.linkage import encodings
from conveyor.kinds.linkage.kind import (
    CompareInput,
    SolveInput,
    blocks_key,
    clks_key,
    compare,
    result_key,
    scores_key,
    solve,
)
from conveyor.storage.fs import FileStorage
from conveyor.worker.context import Context

PROJECT = "0190f3c2-0000-7000-8000-0000000000aa"
# Three 2-byte records per party; B's rows are A's in reverse order, so the groups are known.
PARTY_A = [b"\xff\x00", b"\x0f\x0f", b"\xaa\x55"]
PARTY_B = PARTY_A[::-1]


def context(storage: FileStorage, job_id: str, workdir: Path) -> Context:
    return Context(job_id=job_id, kind="linkage", attempt=1, storage=storage, workdir=workdir,
                   send=lambda _: None, is_cancelled=lambda: False)  # fmt: skip


def run_chunk(storage: FileStorage, tmp_path: Path, chunk_id: str, **how: Any) -> None:
    ctx = context(storage, chunk_id, tmp_path / chunk_id)
    inp = CompareInput(project_id=PROJECT, run_id="r", threshold=0.9, size=2, datasets=[0, 1],
                       comparisons=9, **how)  # fmt: skip
    assert compare(inp, ctx).candidates == 3
    ctx.save_outputs()  # as the worker does when the handler returns


@pytest.mark.parametrize("blocked", [False, True])
def test_compare_and_solve_use_the_context_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blocked: bool
) -> None:
    # Settings from the environment name other storage: the kinds must not look there.
    monkeypatch.setenv("CONVEYOR_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("CONVEYOR_STORAGE", f"file://{tmp_path / 'elsewhere'}")
    storage = FileStorage(tmp_path / "files")
    for party, rows in enumerate((PARTY_A, PARTY_B)):
        storage.write(clks_key(PROJECT, party), [encodings.pack(rows)[0]])
        blocks = encodings.dumps_blocks({"all": list(range(len(rows)))})
        storage.write(blocks_key(PROJECT, party), [blocks])
    chunk = "0190f3c2-0000-7000-8000-0000000000c1"
    run_chunk(storage, tmp_path, chunk, **({"blocks": ["all"]} if blocked else
                                           {"ranges": [[0, 3], [0, 3]]}))  # fmt: skip
    assert storage.stat(scores_key(chunk)).size > 0

    solver = "0190f3c2-0000-7000-8000-0000000000d1"
    ctx = context(storage, solver, tmp_path / solver)
    inp = SolveInput(project_id=PROJECT, run_id="r", result_type="groups", sizes=[3, 3],
                     chunk_ids=[chunk], total_comparisons=9)  # fmt: skip
    assert solve(inp, ctx).groups == 3
    ctx.save_outputs()
    result = json.loads(b"".join(storage.read(result_key(solver))))
    assert result["groups"] == [[[0, 0], [1, 2]], [[0, 1], [1, 1]], [[0, 2], [1, 0]]]
    assert not (tmp_path / "elsewhere").exists()
