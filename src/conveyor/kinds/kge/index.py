"""`kge.index`: an HNSW index (hnswlib, L2) over a trained model's entity vectors.

hnswlib was picked over usearch and annoy by measurement (bench/kge.py, docs/benchmarks.md):
at the same graph settings it matched usearch's recall@10 with faster queries, and annoy
needed many more trees for the same recall.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from conveyor.kinds.kge import models as m
from conveyor.kinds.registry import task
from conveyor.worker.context import Context, PermanentError

CHUNK = 5000  # added in chunks so progress and cancellation stay responsive on big graphs


def build(
    vectors: np.ndarray[Any, Any],
    m_degree: int = 16,
    ef_construction: int = 200,
    on_chunk: Callable[[int, int], None] | None = None,
) -> Any:
    """An hnswlib L2 index holding row i of `vectors` under label i."""
    import hnswlib

    index = hnswlib.Index(space="l2", dim=int(vectors.shape[1]))
    index.init_index(
        max_elements=max(1, len(vectors)), M=m_degree, ef_construction=ef_construction,
        random_seed=1,
    )  # fmt: skip
    for start in range(0, len(vectors), CHUNK):
        part = vectors[start : start + CHUNK]
        index.add_items(part, np.arange(start, start + len(part)))
        if on_chunk is not None:
            on_chunk(start + len(part), len(vectors))
    return index


@task(
    "kge.index",
    input=m.IndexInput,
    output=m.IndexOutput,
    queue="kge",
    description="Build an HNSW nearest-neighbour index over trained entity embeddings.",
)
def index(inp: m.IndexInput, ctx: Context) -> m.IndexOutput:
    """Index `entity_embeddings.npy`; write `index.hnsw`."""
    try:
        vectors = np.load(ctx.input_file(m.ENTITY_VECTORS), allow_pickle=False)
    except ValueError as exc:
        raise PermanentError(f"{m.ENTITY_VECTORS}: {exc}") from None
    if vectors.ndim != 2 or len(vectors) == 0:
        raise PermanentError(f"{m.ENTITY_VECTORS}: expected a non-empty 2-d array")
    started = time.monotonic()
    built = build(
        vectors.astype(np.float32), inp.m, inp.ef_construction,
        on_chunk=lambda done, total: ctx.progress(done, total, f"{done}/{total} vectors"),
    )  # fmt: skip
    built.save_index(str(ctx.output_file(m.INDEX_FILE)))
    return m.IndexOutput(
        count=len(vectors),
        dimension=int(vectors.shape[1]),
        m=inp.m,
        ef_construction=inp.ef_construction,
        seconds=round(time.monotonic() - started, 3),
    )
