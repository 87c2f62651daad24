"""The kinds of a linkage run: `linkage.run`, which spawns one `linkage.compare` child job per
chunk and, once they have all ended, merges and solves (`linkage.solve` does the same merge and
solve as a job of its own, given the chunks' job ids).

Encodings live in blob storage under the project's prefix (`jobs/<project_id>/in/…`); a
compare job reads only the byte ranges of its chunk, writes its candidate pairs as the output
file `scores.bin` (anonlink's binary format), and the run job merges those files and writes
the run's result as its output file `result.json`. Nothing large passes through the queue, and
the number of chunks has no ceiling: children are inserted with the run job's settlement, in
one store transaction whatever their number, and the run job holds no worker while it waits.
"""

from __future__ import annotations

import functools
import json
import secrets
from typing import Any, Literal

import numpy as np
from anonlink.similarities import dice_coefficient_accelerated
from anonlink.solving import greedy_solve
from bitarray import bitarray
from pydantic import BaseModel, Field

from conveyor.kinds.linkage import encodings, plan
from conveyor.kinds.linkage.candidates import Candidates
from conveyor.kinds.registry import task
from conveyor.storage import BlobStorage
from conveyor.storage.base import job_key
from conveyor.worker.context import Context, PermanentError
from conveyor.worker.continuation import Children, Continue

COMPARE = "linkage.compare"
SOLVE = "linkage.solve"
RUN = "linkage.run"
#: Slices per chunk: progress and cancellation are checked between them.
SLICES = 8
ResultType = Literal["groups", "similarity_scores", "permutations"]


def clks_key(project_id: str, party: int) -> str:
    return job_key(project_id, "in", f"party-{party}.clk")


def blocks_key(project_id: str, party: int) -> str:
    return job_key(project_id, "in", f"party-{party}.blocks.json")


def scores_key(chunk_job_id: str) -> str:
    return job_key(chunk_job_id, "out", "scores.bin")


def result_key(solve_job_id: str) -> str:
    return job_key(solve_job_id, "out", "result.json")


def _read(storage: BlobStorage, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join(storage.read(key, start, end))


class CompareInput(BaseModel):
    """One chunk of a run's comparisons between two parties."""

    project_id: str
    run_id: str
    threshold: float = Field(gt=0, le=1)
    size: int = Field(gt=0, description="Bytes per encoding.")
    datasets: list[int] = Field(min_length=2, max_length=2)
    ranges: list[list[int]] | None = None
    blocks: list[str] | None = None
    comparisons: int = Field(ge=0)


class CompareOutput(BaseModel):
    comparisons: int
    candidates: int


class SolveInput(BaseModel):
    project_id: str
    run_id: str
    result_type: ResultType
    sizes: list[int]
    chunk_ids: list[str]
    total_comparisons: int = 0


class SolveOutput(BaseModel):
    candidates: int
    groups: int
    total_comparisons: int


def _compare(a: list[bitarray], b: list[bitarray], threshold: float) -> tuple[Any, Any, Any]:
    sims, (ri, rj) = dice_coefficient_accelerated((a, b), threshold, k=None)
    return (
        np.frombuffer(sims, np.float64) if len(sims) else np.zeros(0, np.float64),
        np.asarray(ri, np.uint32),
        np.asarray(rj, np.uint32),
    )


def _pairs(i: int, j: int, sims: Any, ri: Any, rj: Any) -> Candidates:
    n = len(sims)
    return Candidates(
        np.asarray(sims, np.float64), np.full(n, i, np.uint32), np.full(n, j, np.uint32),
        np.asarray(ri, np.uint32), np.asarray(rj, np.uint32),
    )  # fmt: skip


def _compare_ranges(inp: CompareInput, ctx: Context) -> Candidates:
    assert inp.ranges is not None
    (i, j), ((a, b), (c, d)) = inp.datasets, inp.ranges
    right = encodings.unpack(
        _read(ctx.storage, clks_key(inp.project_id, j), c * inp.size, d * inp.size), inp.size
    )
    parts, done = [], 0
    step = max(1, -(-(b - a) // SLICES))
    for start in range(a, b, step):
        stop = min(b, start + step)
        left = encodings.unpack(
            _read(ctx.storage, clks_key(inp.project_id, i), start * inp.size, stop * inp.size),
            inp.size,
        )
        sims, ri, rj = _compare(left, right, inp.threshold)
        parts.append(_pairs(i, j, sims, ri + start, rj + c))
        done += (stop - start) * (d - c)
        ctx.progress(done, inp.comparisons, "comparisons")
    return Candidates.concat(parts)


@functools.lru_cache(maxsize=4)
def _whole(storage: BlobStorage, key: str) -> bytes:
    # A party's upload never changes (its token works once), so chunks of the same run in
    # this process (one storage per worker child) share one read of it.
    return _read(storage, key)


@functools.lru_cache(maxsize=4)
def _blocks(storage: BlobStorage, key: str) -> dict[str, list[int]]:
    return encodings.loads_blocks(storage.read(key))


def _rows(data: bytes, size: int, rows: list[int], cache: dict[int, bitarray]) -> list[bitarray]:
    """Bitarrays of just these rows (a chunk touches few of a large party's records)."""
    out = []
    for r in rows:
        bits = cache.get(r)
        if bits is None:
            bits = cache[r] = encodings.unpack(data[r * size : (r + 1) * size], size)[0]
        out.append(bits)
    return out


def _compare_blocks(inp: CompareInput, ctx: Context) -> Candidates:
    assert inp.blocks is not None
    i, j = inp.datasets
    # Storages hash by identity; mypy just does not count a Protocol instance as Hashable.
    data = [_whole(ctx.storage, clks_key(inp.project_id, p)) for p in (i, j)]  # type: ignore[arg-type]
    blocks = [_blocks(ctx.storage, blocks_key(inp.project_id, p)) for p in (i, j)]  # type: ignore[arg-type]
    seen: tuple[dict[int, bitarray], dict[int, bitarray]] = ({}, {})
    parts, done = [], 0
    for n, block in enumerate(inp.blocks):
        rows_i, rows_j = blocks[0].get(block, []), blocks[1].get(block, [])
        if rows_i and rows_j:
            sims, ri, rj = _compare(
                _rows(data[0], inp.size, rows_i, seen[0]),
                _rows(data[1], inp.size, rows_j, seen[1]),
                inp.threshold,
            )
            index_i, index_j = np.asarray(rows_i, np.uint32), np.asarray(rows_j, np.uint32)
            parts.append(_pairs(i, j, sims, index_i[ri], index_j[rj]))
            done += len(rows_i) * len(rows_j)
        if n % 64 == 0:
            ctx.progress(done, inp.comparisons, "comparisons")
    return Candidates.concat(parts)


@task(
    COMPARE,
    input=CompareInput,
    output=CompareOutput,
    max_attempts=5,
    retry_backoff=0.5,
    description="Dice similarities of one chunk of a linkage run (a sub-job of the run).",
)
def compare(inp: CompareInput, ctx: Context) -> CompareOutput:
    """Compare one chunk; write its candidate pairs to `scores.bin`."""
    if (inp.ranges is None) == (inp.blocks is None):
        raise PermanentError("a chunk has either 'ranges' or 'blocks'")
    found = _compare_ranges(inp, ctx) if inp.ranges is not None else _compare_blocks(inp, ctx)
    found = found.sorted()
    ctx.output_file("scores.bin").write_bytes(found.dump())
    ctx.progress(inp.comparisons, inp.comparisons, "comparisons")
    return CompareOutput(comparisons=inp.comparisons, candidates=len(found))


def permutations(
    groups: list[list[list[int]]], sizes: list[int]
) -> tuple[list[list[int]], list[int], int]:
    """Random row orders for both parties that put every matched pair on the same row.

    As the entity service did: the matches take random rows among the first
    `rows = min(n0, n1)` (mask 1 there); each party's other records fill its remaining rows
    at random, so each party's permutation is a permutation of its own rows.
    """
    rows = min(sizes)
    rng = secrets.SystemRandom()
    order = list(range(rows))
    rng.shuffle(order)
    perms: list[list[int]] = [[-1] * sizes[0], [-1] * sizes[1]]
    mask = [0] * rows
    for new_row, group in zip(order, groups, strict=False):
        mask[new_row] = 1
        for dset, rec in group:
            perms[dset][rec] = new_row
    left = order[len(groups) :]
    for party in (0, 1):
        free = [*left, *range(rows, sizes[party])]
        rng.shuffle(free)
        for rec, row in enumerate(perms[party]):
            if row < 0:
                perms[party][rec] = free.pop()
    return perms, mask, rows


@task(
    SOLVE,
    input=SolveInput,
    output=SolveOutput,
    max_attempts=3,
    retry_backoff=0.5,
    description="Merge a linkage run's chunk scores and solve (groups, scores, permutations).",
)
def solve(inp: SolveInput, ctx: Context) -> SolveOutput:
    """Merge the chunks' candidate pairs and write the run's result to `result.json`."""
    return merge_and_solve(inp, ctx)


def merge_and_solve(inp: SolveInput, ctx: Context) -> SolveOutput:
    """The solve: read every chunk's `scores.bin`, solve, write `result.json` (an output of
    the job `ctx` runs: `linkage.solve`, or `linkage.run` once its chunks have ended)."""
    parts = []
    for n, chunk_id in enumerate(inp.chunk_ids):
        parts.append(Candidates.load(_read(ctx.storage, scores_key(chunk_id))))
        if n % 64 == 0 or n + 1 == len(inp.chunk_ids):
            ctx.progress(n + 1, len(inp.chunk_ids), "merging similarity scores")
    found = Candidates.concat(parts).sorted()
    ctx.progress(0, None, "compute output")
    result: dict[str, Any]
    groups: list[list[list[int]]] = []
    if inp.result_type == "similarity_scores":
        result = {"similarity_scores": [
            [[int(d0), int(r0)], [int(d1), int(r1)], float(s)]
            for s, d0, d1, r0, r1 in zip(found.sims, found.dset0, found.dset1, found.rec0,
                                         found.rec1, strict=True)
        ]}  # fmt: skip
    else:
        solved = greedy_solve(found.anonlink())
        groups = sorted(sorted([int(d), int(r)] for d, r in g) for g in solved)
        if inp.result_type == "groups":
            result = {"groups": groups}
        else:
            if len(inp.sizes) != 2:
                raise PermanentError("permutations need exactly 2 parties")
            perms, mask, rows = permutations(groups, inp.sizes)
            result = {"permutations": perms, "mask": mask, "rows": rows}
    ctx.check_cancelled()
    ctx.output_file("result.json").write_text(json.dumps(result, separators=(",", ":")))
    return SolveOutput(
        candidates=len(found), groups=len(groups), total_comparisons=inp.total_comparisons
    )


class RunInput(BaseModel):
    """A whole run: its chunks are planned here, the same way the API planned their total."""

    project_id: str
    run_id: str
    threshold: float = Field(gt=0, le=1)
    size: int = Field(gt=0, description="Bytes per encoding.")
    sizes: list[int] = Field(min_length=2)
    uses_blocking: bool = False
    result_type: ResultType
    chunk_aim: int = Field(plan.DEFAULT_AIM, gt=0, description="Comparisons per chunk.")
    tags: list[str] = Field(default_factory=list, description="Given to every chunk job.")


def plan_chunks(storage: BlobStorage, inp: RunInput) -> list[dict[str, Any]]:
    """The run's chunks (deterministic: the API computes the same total from them)."""
    if inp.uses_blocking:
        blocks = [
            encodings.loads_blocks(storage.read(blocks_key(inp.project_id, i)))
            for i in range(len(inp.sizes))
        ]
        return plan.chunks_with_blocks(blocks, inp.chunk_aim)
    return plan.chunks_without_blocks(inp.sizes, inp.chunk_aim)


@task(
    RUN,
    input=RunInput,
    output=SolveOutput,
    max_attempts=3,
    retry_backoff=0.5,
    description="A linkage run: one compare child job per chunk, then merge and solve.",
)
def run(inp: RunInput, ctx: Context) -> Continue:
    """Spawn a `linkage.compare` child per chunk; resume in `run_done` when all have ended."""
    common = {"project_id": inp.project_id, "run_id": inp.run_id, "threshold": inp.threshold,
              "size": inp.size}  # fmt: skip
    chunks = plan_chunks(ctx.storage, inp)
    for chunk in chunks:
        ctx.spawn(COMPARE, {**common, **chunk}, priority=10, tags=inp.tags)
    ctx.progress(0, len(chunks), "comparing")
    total = sum(c["comparisons"] for c in chunks)
    return ctx.wait_for_children({"total_comparisons": total})


@run.continuation
def run_done(inp: RunInput, children: Children, ctx: Context) -> SolveOutput:
    """Every chunk has ended: fail with the first that did not succeed, else merge and solve."""
    for child in children:
        if not child.succeeded:
            reason = child.error.message if child.error else "cancelled"
            raise PermanentError(f"comparison sub-job {child.id} {child.state.value}: {reason}")
    return merge_and_solve(
        SolveInput(
            project_id=inp.project_id, run_id=inp.run_id, result_type=inp.result_type,
            sizes=inp.sizes, chunk_ids=[child.id for child in children],
            total_comparisons=children.state["total_comparisons"],
        ),
        ctx,
    )  # fmt: skip
