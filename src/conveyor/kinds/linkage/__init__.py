"""Privacy-preserving record linkage (the Anonlink Entity Service workload).

Parties upload CLKs (Bloom-filter encodings made with clkhash); a run compares them in chunk
sub-jobs (`linkage.compare`, one per slice of the comparison matrix, run in parallel on any
worker) and then solves (`linkage.solve`: groups, similarity scores or permutations). Import
this package in a worker (`CONVEYOR_IMPORTS=conveyor.kinds.linkage`) to run both kinds.
"""

import warnings

# anonlink 0.15 imports pkg_resources at import time; its deprecation notice is not ours.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
warnings.filterwarnings("ignore", message="mypy_extensions.TypedDict", category=DeprecationWarning)

import conveyor.kinds.linkage.kind  # noqa: E402, F401 (declares the kinds)
