"""`kge.import`: triples from an uploaded N-Triples, Turtle or TSV file, parsed with rdflib.

The job's outputs `triples.tsv` and `labels.json` (entity -> `rdfs:label`/`skos:prefLabel`,
for label search) are what the kge API adds to the dataset once the job has succeeded. SPARQL
endpoint import is not implemented.
"""

from __future__ import annotations

import json

from conveyor.kinds.kge import models as m
from conveyor.kinds.kge.triples import TriplesError, parse_rdf, parse_tsv, to_tsv
from conveyor.kinds.registry import task
from conveyor.worker.context import Context, PermanentError


@task(
    "kge.import",
    input=m.ImportInput,
    output=m.ImportOutput,
    queue="kge",
    description="Parse an uploaded N-Triples/Turtle/TSV file into triples.tsv.",
)
def import_triples(inp: m.ImportInput, ctx: Context) -> m.ImportOutput:
    """Parse the input file `inp.file`; write `triples.tsv` (entity-to-entity triples only) and
    `labels.json`."""
    ctx.progress(0, 2, f"parsing {inp.format}")
    try:
        text = ctx.input_file(inp.file).read_text(encoding="utf-8")
        if inp.format == "tsv":
            triples, labels, literals = parse_tsv(text), dict[str, str](), 0
        else:
            triples, labels, literals = parse_rdf(text, inp.format)
    except (TriplesError, UnicodeDecodeError) as exc:
        raise PermanentError(f"{inp.file}: {exc}") from None
    ctx.progress(1, 2, f"{len(triples)} triples parsed")
    ctx.output_file(m.TRIPLES_FILE).write_text(to_tsv(triples), encoding="utf-8")
    ctx.output_file(m.LABELS_FILE).write_text(json.dumps(labels), encoding="utf-8")
    ctx.progress(2, 2, "done")
    return m.ImportOutput(triples=len(triples), labels=len(labels), skipped_literals=literals)
