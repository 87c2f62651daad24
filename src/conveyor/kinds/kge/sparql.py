"""The user's SPARQL for `kge.import`, checked with rdflib's SPARQL parser, and the queries that
page through its triples.

A user gives either a graph pattern that binds `?s ?p ?o` (the body of a WHERE clause, as the
original kge-server's `graph_pattern`) or a whole `SELECT ?s ?p ?o` query; PREFIX/BASE lines may
precede either. Both become the same paged query,

    SELECT DISTINCT ?s ?p ?o WHERE { <pattern, or { <the SELECT> } as a subquery> }
    ORDER BY ?s ?p ?o LIMIT <page> OFFSET <n>

so every page is a stable slice of one ordered, duplicate-free solution sequence, and the
total comes from `SELECT (COUNT(*) AS ?n)` over the same subquery.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

TRIPLE_VARIABLES = ("s", "p", "o")
ORIGINAL_VARIABLES = ("subject", "predicate", "object")  # the kge-server's graph_pattern
# PREFIX/BASE declarations and comments at the start: they must stay in front of the query
# that wraps the user's pattern or SELECT.
PROLOGUE = re.compile(
    r"(?:\s+|\#[^\n]*|PREFIX\s*[^\s:]*:\s*<[^<>\s]*>|BASE\s*<[^<>\s]*>)*", re.IGNORECASE
)
QUERY_FORM = re.compile(r"(SELECT|CONSTRUCT|ASK|DESCRIBE)\b", re.IGNORECASE)
CRAWL_BATCH = 200  # subjects per VALUES block when a crawl reads the next level
# What SPARQL's IRIREF forbids between < and >: an IRI with one of these cannot be sent back.
NOT_IN_IRI = re.compile(r'[\x00-\x20<>"{}|^`\\]')


class QueryError(ValueError):
    """The query is not a SELECT of `?s ?p ?o` nor a graph pattern binding them."""


@dataclass(frozen=True, slots=True)
class TripleQuery:
    """A checked user query: its prologue and a group graph pattern binding ?s ?p ?o."""

    prologue: str
    pattern: str

    def page(self, limit: int, offset: int) -> str:
        return (
            f"{self.prologue}\nSELECT DISTINCT ?s ?p ?o WHERE {{\n{self.pattern}\n}}\n"
            f"ORDER BY ?s ?p ?o\nLIMIT {limit} OFFSET {offset}"
        )

    def count(self) -> str:
        return (
            f"{self.prologue}\nSELECT (COUNT(*) AS ?n) WHERE {{\n"
            f"SELECT DISTINCT ?s ?p ?o WHERE {{\n{self.pattern}\n}}\n}}"
        )


def original_pattern(text: str) -> str:
    """The original kge-server's `graph_pattern` binds ?subject ?predicate ?object: such a
    pattern becomes a SELECT of them as ?s ?p ?o; anything else is returned as it is."""
    prologue, body = _split(text)
    if not body or QUERY_FORM.match(body):
        return text
    try:
        tree = _parse(f"{prologue}\nSELECT * WHERE {{\n{body}\n}}", "graph pattern")
    except QueryError:
        return text  # triple_query reports it
    bound = _variables(tree[1]["where"])
    if set(TRIPLE_VARIABLES) <= bound or not set(ORIGINAL_VARIABLES) <= bound:
        return text
    return (
        f"{prologue}\nSELECT (?subject AS ?s) (?predicate AS ?p) (?object AS ?o)"
        f" WHERE {{\n{body}\n}}"
    )


def triple_query(text: str) -> TripleQuery:
    """Check `text` (a graph pattern or a `SELECT ?s ?p ?o` query) and wrap it for paging;
    raise `QueryError` saying what is wrong."""
    prologue, body = _split(text)
    if not body:
        raise QueryError("the query is empty: give a graph pattern or a SELECT ?s ?p ?o query")
    form = QUERY_FORM.match(body)
    if form is None:  # a graph pattern: it must parse inside a WHERE clause
        pattern = body
        wrapped = f"{prologue}\nSELECT ?s ?p ?o WHERE {{\n{body}\n}}"
        tree = _parse(wrapped, "graph pattern", lines_before=prologue.count("\n") + 2)
        unbound = [f"?{v}" for v in TRIPLE_VARIABLES if v not in _variables(tree[1]["where"])]
        if unbound:
            raise QueryError(f"the graph pattern must bind ?s ?p ?o; {', '.join(unbound)} unused")
        return TripleQuery(prologue, pattern)
    query = _parse(text, "query")[1]
    if query.name != "SelectQuery":
        raise QueryError(
            f"only SELECT queries give triples, not {form.group(1).upper()}: SELECT ?s ?p ?o"
            " WHERE { ... }, or just the graph pattern"
        )
    if "datasetClause" in query:
        raise QueryError("FROM / FROM NAMED cannot be paged as a subquery: use the graph field")
    # not .get(): rdflib's CompValue.get answers a missing key with the key itself
    projection = query["projection"] if "projection" in query else []  # noqa: SIM401
    named = {str(v["var"] if "var" in v else v["evar"]) for v in projection}
    missing = [f"?{v}" for v in TRIPLE_VARIABLES if v not in named]
    if missing:
        raise QueryError(
            f"the SELECT must name ?s ?p ?o (missing {', '.join(missing)}); SELECT * is not enough"
        )
    return TripleQuery(prologue, f"{{\n{body}\n}}")


def _split(text: str) -> tuple[str, str]:
    """(PREFIX/BASE prologue, the rest)."""
    head = PROLOGUE.match(text)
    split = head.end() if head else 0
    return text[:split].strip(), text[split:].strip()


def subjects_query(subjects: list[str]) -> TripleQuery:
    """All triples of these subjects: one level of a crawl."""
    values = " ".join(f"<{s}>" for s in subjects if iri(s))
    return TripleQuery("", f"VALUES ?s {{ {values} }}\n?s ?p ?o")


def iri(term: str) -> bool:
    """Whether `term` can be written as a SPARQL IRI (`<...>`), so a crawl can ask about it."""
    return ":" in term and NOT_IN_IRI.search(term) is None


def _parse(query: str, what: str, lines_before: int = 0) -> Any:
    """rdflib's parse tree of `query`; errors point at the user's text (`lines_before` lines
    of wrapping precede it)."""
    from pyparsing import ParseBaseException
    from rdflib.plugins.sparql.parser import parseQuery

    try:
        return parseQuery(query)
    except ParseBaseException as exc:
        where = f"line {exc.lineno - lines_before}, column {exc.col}"
        raise QueryError(f"not a valid SPARQL {what}: {exc.msg} at {where}") from None
    except Exception as exc:  # rdflib's own checks raise plain exceptions
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
        raise QueryError(f"not a valid SPARQL {what}: {reason}") from None


def _variables(tree: Any) -> set[str]:
    from rdflib.term import Variable

    return {str(v) for v in _walk(tree) if isinstance(v, Variable)}


def _walk(node: Any) -> Iterator[Any]:
    from pyparsing import ParseResults

    yield node
    if isinstance(node, dict):  # rdflib's CompValue nodes
        children: Any = node.values()
    elif isinstance(node, list | tuple | ParseResults):
        children = node
    else:
        return
    for child in children:
        yield from _walk(child)
