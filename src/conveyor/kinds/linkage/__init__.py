"""Privacy-preserving record linkage (the Anonlink Entity Service workload).

Parties upload CLKs (Bloom-filter encodings made with clkhash); a run compares them in chunk
sub-jobs (`linkage.compare`, one per slice of the comparison matrix, run in parallel on any
worker) and then solves (`linkage.solve`: groups, similarity scores or permutations). Import
this package in a worker (`CONVEYOR_IMPORTS=conveyor.kinds.linkage`) to run both kinds.
"""

import conveyor.kinds.linkage.kind  # noqa: F401 (declares the kinds)
