"""A real SPARQL 1.1 Protocol endpoint for tests: Starlette answering with rdflib's query engine
over PyKEEN's bundled Nations graph, on a free loopback port.

`/sparql` is the well-behaved endpoint. `server.scripted(...)` adds another path that first
answers with canned faults (a 500, a 400 with a message, malformed JSON) and/or holds page
requests at a gate, then answers for real; every path records the queries it was sent.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.kge.harness import nations
from tests.servers.http import serve_in_thread

EX = "http://example.org/nations/"
REL = "http://example.org/nations/rel/"
PEOPLE_GRAPH = "http://example.org/graphs/people"
RESULTS_JSON = "application/sparql-results+json"
LABELS = {"usa": "United States", "uk": "United Kingdom", "ussr": "Soviet Union"}


@dataclass
class Fault:
    status: int
    body: str
    content_type: str = "text/plain"


@dataclass
class Script:
    """What one path does: `faults` answered first, one per request; requests for pages
    (queries with OFFSET) after the first `open_pages` wait for `gate`."""

    faults: list[Fault] = field(default_factory=list)
    open_pages: int | None = None
    gate: threading.Event = field(default_factory=threading.Event)
    queries: list[str] = field(default_factory=list)
    held: threading.Event = field(default_factory=threading.Event)

    def pages(self) -> list[str]:
        return [q for q in self.queries if "OFFSET" in q]


class SparqlServer:
    def __init__(self) -> None:
        import rdflib

        self.data = rdflib.Dataset()
        default = self.data.graph(rdflib.graph.DATASET_DEFAULT_GRAPH_ID)
        for s, p, o in nations():
            default.add((rdflib.URIRef(EX + s), rdflib.URIRef(REL + p), rdflib.URIRef(EX + o)))
        for name, label in LABELS.items():
            default.add((rdflib.URIRef(EX + name), rdflib.RDFS.label, rdflib.Literal(label, "en")))
        # a blank node: its label means nothing outside one answer, so it cannot be imported
        default.add((rdflib.BNode(), rdflib.URIRef(REL + "unnamed"), rdflib.URIRef(EX + "usa")))
        people = self.data.graph(rdflib.URIRef(PEOPLE_GRAPH))
        knows = rdflib.URIRef("http://xmlns.com/foaf/0.1/knows")
        for a, b in (("alice", "bob"), ("bob", "carol")):
            people.add((rdflib.URIRef(EX + a), knows, rdflib.URIRef(EX + b)))
        self.scripts: dict[str, Script] = {"sparql": Script()}
        self._names = itertools.count(1)
        self.url = ""
        self.app = Starlette(routes=[Route("/{name}", self.answer, methods=["GET", "POST"])])

    def scripted(self, script: Script) -> str:
        """A new endpoint URL that follows `script`."""
        name = f"scripted-{next(self._names)}"
        self.scripts[name] = script
        return f"{self.url}/{name}"

    @property
    def endpoint(self) -> str:
        return f"{self.url}/sparql"

    def release_all(self) -> None:
        for script in self.scripts.values():
            script.gate.set()

    async def answer(self, request: Request) -> Response:
        script = self.scripts.get(request.path_params["name"])
        if script is None:
            return Response("no such endpoint", 404)
        if request.method == "POST":
            kind = request.headers.get("content-type", "").split(";")[0]
            if kind == "application/sparql-query":
                query, graph = (
                    (await request.body()).decode(),
                    request.query_params.get("default-graph-uri"),
                )
            else:
                form = await request.form()
                query, graph = str(form.get("query", "")), form.get("default-graph-uri")
        else:
            query = request.query_params.get("query", "")
            graph = request.query_params.get("default-graph-uri")
        script.queries.append(query)
        if script.faults:
            fault = script.faults.pop(0)
            return Response(fault.body, fault.status, media_type=fault.content_type)
        held = script.open_pages is not None and len(script.pages()) > script.open_pages
        if "OFFSET" in query and held:
            script.held.set()
            await _wait(script.gate)
        return await _run(self.data, query, None if graph is None else str(graph))


async def _wait(gate: threading.Event) -> None:
    from starlette.concurrency import run_in_threadpool

    await run_in_threadpool(gate.wait, 60)  # bounded: a test that forgets the gate still ends


async def _run(data: object, query: str, graph: str | None) -> Response:
    import rdflib
    from starlette.concurrency import run_in_threadpool

    assert isinstance(data, rdflib.Dataset)
    target = data.graph(rdflib.URIRef(graph) if graph else rdflib.graph.DATASET_DEFAULT_GRAPH_ID)

    def evaluate() -> bytes:
        result = target.query(query)
        return bytes(result.serialize(format="json") or b"")

    try:
        body = await run_in_threadpool(evaluate)
    except Exception as exc:  # rdflib's parser and evaluator errors: the client's fault
        return Response(f"Parse error: {exc}", 400, media_type="text/plain")
    return Response(body, 200, media_type=RESULTS_JSON)


@contextmanager
def sparql_server() -> Iterator[SparqlServer]:
    server = SparqlServer()
    with serve_in_thread(server.app) as url:
        server.url = url
        try:
            yield server
        finally:
            server.release_all()
