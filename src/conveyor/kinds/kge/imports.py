"""`kge.import`: triples from an uploaded N-Triples, Turtle or TSV file (parsed with rdflib), or
from a SPARQL endpoint, page by page.

The job's outputs `triples.tsv` and `labels.json` (entity -> `rdfs:label`/`skos:prefLabel`,
for label search) are what the kge API adds to the dataset once the job has succeeded.

A SPARQL import counts the solutions first (the progress total, when the endpoint can count),
then reads `page_size` triples per request in a stable order, reporting progress after every
page; a cancel stops it between pages. With `levels` it then crawls, as the original did: each
level reads all triples of every entity the previous read reached and no level expanded yet.
Progress is the original's: `current`/`total` within the current step (triples of the query,
then entities expanded of the level's frontier), the step itself in the message as `step k/n:`
(the API reports it as `current_steps`/`total_steps`). Transient endpoint failures
are retried per request (`conveyor.kinds.kge.endpoint`); if they persist the attempt fails
and the job is retried later. A refusal (4xx, malformed results, a URL the SSRF guard
refuses) fails the job at once.
"""

from __future__ import annotations

import json

from conveyor.kinds.kge import models as m
from conveyor.kinds.kge.endpoint import Endpoint, EndpointRefused, Row
from conveyor.kinds.kge.sparql import (
    CRAWL_BATCH,
    QueryError,
    TripleQuery,
    iri,
    subjects_query,
    triple_query,
)
from conveyor.kinds.kge.triples import (
    Collector,
    Triple,
    TriplesError,
    parse_rdf,
    parse_tsv,
    to_tsv,
)
from conveyor.kinds.registry import task
from conveyor.webhooks.ssrf import CallbackPolicy, UnsafeURLError
from conveyor.worker.context import Context, PermanentError


@task(
    "kge.import",
    input=m.ImportInput,
    output=m.ImportOutput,
    queue="kge",
    description="Parse an uploaded N-Triples/Turtle/TSV file, or page through a SPARQL"
    " endpoint's triples, into triples.tsv.",
)
def import_triples(inp: m.ImportInput, ctx: Context) -> m.ImportOutput:
    """Write `triples.tsv` (entity-to-entity triples only) and `labels.json` from the input
    file `inp.file`, or from `inp.sparql`."""
    if inp.sparql is not None:
        reader = from_sparql(inp.sparql, ctx)
        found = reader.found
        triples, labels, literals = found.triples, found.labels, found.literals
        unusable, pages = reader.unusable, reader.pages
    else:
        ctx.progress(0, 1, f"parsing {inp.format}")
        triples, labels, literals = from_file(inp, ctx)
        unusable = pages = 0
        ctx.progress(1, 1, f"{len(triples)} triples parsed")
    triples = sorted(set(triples))  # a crawl can reach a triple twice
    ctx.output_file(m.TRIPLES_FILE).write_text(to_tsv(triples), encoding="utf-8")
    ctx.output_file(m.LABELS_FILE).write_text(json.dumps(labels), encoding="utf-8")
    return m.ImportOutput(
        triples=len(triples), labels=len(labels), skipped_literals=literals,
        skipped_unusable=unusable, pages=pages,
    )  # fmt: skip


def from_file(inp: m.ImportInput, ctx: Context) -> tuple[list[Triple], dict[str, str], int]:
    try:
        text = ctx.input_file(inp.file).read_text(encoding="utf-8")
        if inp.format == "tsv":
            return parse_tsv(text), {}, 0
        return parse_rdf(text, inp.format)
    except (TriplesError, UnicodeDecodeError) as exc:
        raise PermanentError(f"{inp.file}: {exc}") from None


def from_sparql(src: m.SparqlSource, ctx: Context) -> Reader:
    """Read the endpoint's triples: the query's, then `levels` rounds of all triples of the
    entities (subjects and objects) the previous read reached, each entity expanded once."""
    try:
        query = triple_query(src.query)
        policy = CallbackPolicy.from_env()
        policy.check(src.endpoint, what="SPARQL endpoint")  # refused: fail before any request
    except (QueryError, UnsafeURLError) as exc:
        raise PermanentError(str(exc)) from None
    endpoint = Endpoint(
        src.endpoint, src.graph, src.timeout_s, src.retries, policy,
        check_cancelled=ctx.check_cancelled, log=ctx.log,
    )  # fmt: skip
    reader = Reader(endpoint, src, ctx)
    try:
        # step 1 reads the query (counted first); each crawl level is one more step
        steps = src.levels + 1
        total = reader.count(query)
        first = f"step 1/{steps}: "
        ctx.progress(0, total, first + ("counted" if total is not None else "reading"))
        reached = reader.read(query, total, first)
        expanded: set[str] = set()
        for level in range(1, src.levels + 1):
            entities = {s for s, _, _ in reached} | {o for _, _, o in reached}
            frontier = sorted(e for e in entities - expanded if iri(e))
            expanded.update(frontier)
            reached = []
            head = f"step {level + 1}/{steps}: level {level}/{src.levels}, "
            for start in range(0, len(frontier), CRAWL_BATCH):
                batch = frontier[start : start + CRAWL_BATCH]
                step = f"{head}entities {start + 1}-{start + len(batch)} of {len(frontier)}: "
                reached += reader.read(subjects_query(batch), None, step, (start, len(frontier)))
            ctx.progress(len(frontier), len(frontier), f"{head}{len(frontier)} entities read")
        return reader
    except EndpointRefused as exc:
        raise PermanentError(str(exc)) from None
    finally:
        endpoint.close()


class Reader:
    """Reads queries page by page into one `Collector`, within the source's `limit`."""

    def __init__(self, endpoint: Endpoint, src: m.SparqlSource, ctx: Context) -> None:
        self.endpoint = endpoint
        self.src = src
        self.ctx = ctx
        self.found = Collector()
        self.rows = 0
        self.pages = 0
        self.unusable = 0

    def count(self, query: TripleQuery) -> int | None:
        """How many triples `query` has (at most `limit`), or None if the endpoint refuses to
        count them (its pages may still work: progress just has no total)."""
        try:
            rows = self.endpoint.select(query.count())
        except EndpointRefused:
            return None
        try:
            total = int(str(rows[0]["n"]))
        except (IndexError, KeyError, ValueError):
            return None
        return total if self.src.limit is None else min(total, self.src.limit)

    def read(
        self, query: TripleQuery, total: int | None, step: str,
        entities: tuple[int, int] | None = None,
    ) -> list[Triple]:  # fmt: skip
        """Every page of `query` (or as many as `limit` leaves room for); the entity triples
        it added. Progress after every page — triples read of `total`, or in a crawl level
        `entities` (done before this batch, frontier size) — a cancel stops it between pages."""
        added = len(self.found.triples)
        offset = 0
        while total is None or self.rows < total:
            size = self.src.page_size
            if self.src.limit is not None:
                size = min(size, self.src.limit - self.rows)
            if size <= 0:
                break
            self.ctx.check_cancelled()
            rows = self.endpoint.select(query.page(size, offset))
            self.pages += 1
            for row in rows:
                self._take(row)
            offset += len(rows)
            self.rows += len(rows)
            message = f"{step}page {self.pages}: {self.rows} triples read"
            current, of = (self.rows, total) if entities is None else entities
            self.ctx.progress(current, of, message)  # raises JobCancelled once cancelled
            if not rows:  # a short page is not the end: endpoints may cap answers below it
                break
        return self.found.triples[added:]

    def _take(self, row: Row) -> None:
        from rdflib.term import Literal, URIRef

        s, p, o = row.get("s"), row.get("p"), row.get("o")
        if isinstance(s, URIRef) and isinstance(p, URIRef) and isinstance(o, URIRef | Literal):
            self.found.add(s, p, o)
        else:  # unbound, a blank node, or a literal where RDF allows none
            self.unusable += 1
