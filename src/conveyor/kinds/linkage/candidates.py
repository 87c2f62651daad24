"""Candidate pairs as numpy columns: sorting, merging chunk files, converting for anonlink.

The order is anonlink's own (`find_candidate_pairs`): decreasing similarity, then increasing
(dataset 0, dataset 1, record 0, record 1); exact duplicates (a pair found in two blocks) are
dropped. Chunk files use anonlink's binary similarity-score format (`anonlink.serialization`).
"""

from __future__ import annotations

import array
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from anonlink import serialization

FloatCol = npt.NDArray[np.float64]
IntCol = npt.NDArray[np.uint32]


@dataclass
class Candidates:
    """Columns of candidate pairs (all the same length)."""

    sims: FloatCol
    dset0: IntCol
    dset1: IntCol
    rec0: IntCol
    rec1: IntCol

    def __len__(self) -> int:
        return len(self.sims)

    @classmethod
    def empty(cls) -> Candidates:
        f, i = np.zeros(0, np.float64), np.zeros(0, np.uint32)
        return cls(f, i, i.copy(), i.copy(), i.copy())

    @classmethod
    def concat(cls, parts: Iterable[Candidates]) -> Candidates:
        items = list(parts)
        if not items:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, n) for p in items]) for n in FIELDS))

    def sorted(self) -> Candidates:
        """anonlink's order, without exact duplicates."""
        order = np.lexsort((self.rec1, self.rec0, self.dset1, self.dset0, -self.sims))
        cols = [getattr(self, n)[order] for n in FIELDS]
        if len(order) > 1:
            keep = np.ones(len(order), bool)
            keep[1:] = np.any([np.diff(c) != 0 for c in cols], axis=0)
            cols = [c[keep] for c in cols]
        return Candidates(*cols)

    def anonlink(self) -> Any:
        """The `(sims, (dset_is0, dset_is1), (rec_is0, rec_is1))` tuple anonlink takes."""
        return (
            array.array("d", self.sims.tobytes()),
            (_ints(self.dset0), _ints(self.dset1)),
            (_ints(self.rec0), _ints(self.rec1)),
        )

    def dump(self) -> bytes:
        out = io.BytesIO()
        serialization.dump_candidate_pairs(self.anonlink(), out)
        return out.getvalue()

    @classmethod
    def load(cls, data: bytes) -> Candidates:
        sims, (d0, d1), (r0, r1) = serialization.load_candidate_pairs(io.BytesIO(data))
        return cls(
            np.asarray(sims, np.float64),
            *(np.asarray(c, np.uint32) for c in (d0, d1, r0, r1)),
        )


FIELDS = ("sims", "dset0", "dset1", "rec0", "rec1")


def _ints(col: IntCol) -> array.array[int]:
    out = array.array("I")
    out.frombytes(col.astype(np.uint32).tobytes())
    return out
