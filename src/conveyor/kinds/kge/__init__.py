"""Knowledge-graph embeddings (the kge-server workload): `kge.train`, `kge.index`, `kge.import`.

Import this module in a worker (`conveyor worker --import conveyor.kinds.kge`) to run them.
They need the `kge` extra; install CPU torch first: `pip install torch==2.13.0` and then
`pip install 'conveyor[kge]'` (see docs/workloads/kge.md).
"""

from conveyor.kinds.kge import autocomplete, imports, index, train  # declare the kinds

__all__ = ["autocomplete", "imports", "index", "train"]
