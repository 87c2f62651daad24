"""Split a run's comparisons into chunks, one sub-job each.

Without blocking the comparison matrix of every pair of parties is cut into rectangles of about
`aim` comparisons (anonlink's own `split_to_chunks`, as the entity service did). With blocking,
the blocks two parties share are grouped until a chunk holds about `aim` comparisons.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from anonlink.concurrency import split_to_chunks

DEFAULT_AIM = 4_000_000


def chunks_without_blocks(sizes: Sequence[int], aim: int = DEFAULT_AIM) -> list[dict[str, Any]]:
    """Rectangles `{"datasets": [i, j], "ranges": [[a, b], [c, d]], "comparisons": n}`."""
    out = []
    for info in split_to_chunks(aim, dataset_sizes=list(sizes)):
        (a, b), (c, d) = info[0]["range"], info[1]["range"]
        out.append({
            "datasets": [info[0]["datasetIndex"], info[1]["datasetIndex"]],
            "ranges": [[a, b], [c, d]],
            "comparisons": (b - a) * (d - c),
        })  # fmt: skip
    return out


def chunks_with_blocks(
    blocks: Sequence[dict[str, list[int]]], aim: int = DEFAULT_AIM
) -> list[dict[str, Any]]:
    """Groups of shared blocks `{"datasets": [i, j], "blocks": [...], "comparisons": n}`."""
    out: list[dict[str, Any]] = []
    for i, j in itertools.combinations(range(len(blocks)), 2):
        shared = sorted(set(blocks[i]) & set(blocks[j]))
        current: list[str] = []
        count = 0
        for block in shared:
            current.append(block)
            count += len(blocks[i][block]) * len(blocks[j][block])
            if count >= aim:
                out.append({"datasets": [i, j], "blocks": current, "comparisons": count})
                current, count = [], 0
        if current:
            out.append({"datasets": [i, j], "blocks": current, "comparisons": count})
    return out
