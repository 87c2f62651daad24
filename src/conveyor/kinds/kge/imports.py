"""`kge.import`: triples from an uploaded N-Triples, Turtle or TSV file (parsed with rdflib), or
from a SPARQL endpoint, page by page.

The job's outputs `triples.tsv` and `labels.json` (entity -> `rdfs:label`/`skos:prefLabel`,
for label search) are what the kge API adds to the dataset once the job has succeeded.

A SPARQL import counts the solutions first (the progress total, when the endpoint can count),
then reads `page_size` triples per request in a stable order, reporting progress after every
page; a cancel stops it between pages. Transient endpoint failures are retried per request
(`conveyor.kinds.kge.endpoint`); if they persist the attempt fails and the job is retried
later. A refusal (4xx, malformed results, a URL the SSRF guard refuses) fails the job at once.
"""

from __future__ import annotations

import json

from conveyor.kinds.kge import models as m
from conveyor.kinds.kge.endpoint import Endpoint, EndpointRefused
from conveyor.kinds.kge.sparql import QueryError, TripleQuery, triple_query
from conveyor.kinds.kge.triples import Collector, TriplesError, parse_rdf, parse_tsv, to_tsv
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
        found, unusable, pages = from_sparql(inp.sparql, ctx)
        triples, labels, literals = sorted(found.triples), found.labels, found.literals
    else:
        ctx.progress(0, 2, f"parsing {inp.format}")
        triples, labels, literals = from_file(inp, ctx)
        unusable = pages = 0
        ctx.progress(1, 2, f"{len(triples)} triples parsed")
    ctx.output_file(m.TRIPLES_FILE).write_text(to_tsv(triples), encoding="utf-8")
    ctx.output_file(m.LABELS_FILE).write_text(json.dumps(labels), encoding="utf-8")
    if inp.sparql is None:
        ctx.progress(2, 2, "done")
    return m.ImportOutput(
        triples=len(triples), labels=len(labels), skipped_literals=literals,
        skipped_unusable=unusable, pages=pages,
    )  # fmt: skip


def from_file(
    inp: m.ImportInput, ctx: Context
) -> tuple[list[tuple[str, str, str]], dict[str, str], int]:
    try:
        text = ctx.input_file(inp.file).read_text(encoding="utf-8")
        if inp.format == "tsv":
            return parse_tsv(text), {}, 0
        return parse_rdf(text, inp.format)
    except (TriplesError, UnicodeDecodeError) as exc:
        raise PermanentError(f"{inp.file}: {exc}") from None


def from_sparql(src: m.SparqlSource, ctx: Context) -> tuple[Collector, int, int]:
    """The endpoint's triples and labels, how many rows were unusable, how many pages."""
    try:
        query = triple_query(src.query)
        policy = CallbackPolicy.from_env()
        policy.check(src.endpoint, what="SPARQL endpoint")  # refused: fail before any request
    except (QueryError, UnsafeURLError) as exc:
        raise PermanentError(str(exc)) from None
    endpoint = Endpoint(
        src.endpoint, src.graph, src.timeout_s, src.retries, policy,
        cancelled=lambda: ctx.cancelled, log=ctx.log,
    )  # fmt: skip
    try:
        return _pages(endpoint, query, src, ctx)
    except EndpointRefused as exc:
        raise PermanentError(str(exc)) from None
    finally:
        endpoint.close()


def _pages(
    endpoint: Endpoint, query: TripleQuery, src: m.SparqlSource, ctx: Context
) -> tuple[Collector, int, int]:
    from rdflib.term import Literal, URIRef

    total = _count(endpoint, query.count())
    if total is not None and src.limit is not None:
        total = min(total, src.limit)
    ctx.progress(0, total, "counted" if total is not None else "the endpoint cannot count")
    found, unusable, read, pages = Collector(), 0, 0, 0
    while total is None or read < total:
        size = src.page_size if src.limit is None else min(src.page_size, src.limit - read)
        if size <= 0:
            break
        ctx.check_cancelled()
        rows = endpoint.select(query.page(size, read))
        pages += 1
        for row in rows:
            s, p, o = (row.get(v) for v in ("s", "p", "o"))
            if isinstance(s, URIRef) and isinstance(p, URIRef) and isinstance(o, URIRef | Literal):
                found.add(s, p, o)
            else:  # unbound, a blank node, or a literal where RDF allows none
                unusable += 1
        read += len(rows)
        ctx.progress(read, total, f"page {pages}: {read} triples read")  # stops on cancel
        if not rows:  # a short page is not the end: endpoints may cap answers below page_size
            break
    return found, unusable, pages


def _count(endpoint: Endpoint, query: str) -> int | None:
    """How many triples the query has, or None if the endpoint refuses to count them."""
    try:
        rows = endpoint.select(query)
    except EndpointRefused:
        return None  # the pages themselves may still work; progress just has no total
    value = rows[0].get("n") if rows else None
    try:
        return int(str(value)) if value is not None else None
    except ValueError:
        return None
