"""`kge.import` from a SPARQL endpoint: a real SPARQL 1.1 Protocol server on loopback (rdflib over
PyKEEN's Nations graph, `tests/kge/sparql_server.py`), the handler run in this process with a real
Context, then the /kge API with a real worker process: paging, progress, retries, refusals, the
SSRF guard, cancellation, and training on what was imported."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.kinds.kge import models as m
from conveyor.kinds.kge.imports import import_triples
from conveyor.kinds.kge.sparql import QueryError, original_pattern, triple_query
from conveyor.models import Job, JobState
from conveyor.storage.fs import FileStorage
from conveyor.worker.context import Context, JobCancelled, PermanentError
from tests.integration.harness import wait_for
from tests.kge.harness import Env, nations, running_api
from tests.kge.sparql_server import (
    EX,
    LABELS,
    PEOPLE_GRAPH,
    REL,
    RESULTS_JSON,
    Fault,
    Script,
    SparqlServer,
    sparql_server,
)

pytestmark = [pytest.mark.kge, pytest.mark.timeout(240)]
LOOPBACK = "127.0.0.1/32"
ALL = "?s ?p ?o"
NATIONS_ROWS = 1992 + 3 + 1  # entity triples, rdfs:labels, one blank-node triple


@pytest.fixture(scope="module")
def server() -> Iterator[SparqlServer]:
    with sparql_server() as running:
        yield running


@pytest.fixture
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_CALLBACK_ALLOW", LOOPBACK)


class Run:
    """The handler in this process: a real Context whose progress and logs are recorded."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.progress: list[dict[str, Any]] = []
        self.logs: list[str] = []
        self.cancel_after_pages: int | None = None
        self.cancel_on_retry = False

    def send(self, message: dict[str, Any]) -> None:
        if message["op"] == "progress":
            self.progress.append(message)
        else:
            self.logs.append(message["line"])

    def cancelled(self) -> bool:
        if self.cancel_on_retry and any("retrying" in line for line in self.logs):
            return True
        pages = [p for p in self.progress if "page " in str(p["message"])]
        return self.cancel_after_pages is not None and len(pages) >= self.cancel_after_pages

    def __call__(self, **source: Any) -> m.ImportOutput:
        ctx = Context(
            job_id="job-1", kind="kge.import", attempt=1, storage=FileStorage(self.tmp / "blobs"),
            workdir=self.tmp / "work", send=self.send, is_cancelled=self.cancelled,
        )  # fmt: skip
        ctx.progress = _unthrottled(ctx)  # type: ignore[method-assign]
        output = import_triples(m.ImportInput(sparql=m.SparqlSource(**source)), ctx)
        out = self.tmp / "work" / "out"
        self.outputs = {path.name: path.read_text() for path in out.iterdir()}
        return output


def _unthrottled(ctx: Context) -> Any:
    """Every progress report reaches `send` (the real one coalesces to ~20 a second)."""
    report = ctx.progress

    def progress(current: float, total: float | None = None, message: str | None = None) -> None:
        report(current, total, message)
        ctx.flush()

    return progress


@pytest.fixture
def run(tmp_path: Path, allow_loopback: None) -> Run:
    return Run(tmp_path)


# -- the query the user gives ---------------------------------------------------------------


def test_graph_patterns_and_selects_are_wrapped_for_stable_paging() -> None:
    prologue = "PREFIX r: <http://example.org/nations/rel/>"
    pattern = triple_query(f"{prologue}\n?s r:embassy ?o . ?s ?p ?o")
    page = pattern.page(100, 300)
    assert page.startswith(f"{prologue}\nSELECT DISTINCT ?s ?p ?o WHERE {{\n?s r:embassy ?o")
    assert page.endswith("ORDER BY ?s ?p ?o\nLIMIT 100 OFFSET 300")
    select = triple_query("SELECT ?s ?p ?o WHERE { ?s ?p ?o } LIMIT 5")
    assert "{\n{\nSELECT ?s ?p ?o WHERE { ?s ?p ?o } LIMIT 5\n}\n}" in select.page(5, 0)
    assert select.count().startswith("\nSELECT (COUNT(*) AS ?n)")


def test_the_originals_graph_patterns_bind_subject_predicate_object() -> None:
    original = "?subject <http://x/p> <http://x/o> . ?subject ?predicate ?object"
    query = original_pattern(original)
    assert query.startswith("\nSELECT (?subject AS ?s) (?predicate AS ?p) (?object AS ?o)")
    assert triple_query(query).page(1, 0).count("?subject ?predicate ?object") == 1
    assert original_pattern("?s ?p ?o") == "?s ?p ?o"  # ours is left as it is
    assert original_pattern("?subject ?p") == "?subject ?p"  # broken: triple_query says why


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("CONSTRUCT { ?s ?p ?o } WHERE { ?s ?p ?o }", "only SELECT"),
        ("ASK { ?s ?p ?o }", "only SELECT"),
        ("SELECT ?s ?o WHERE { ?s ?p ?o }", "missing ?p"),
        ("SELECT * WHERE { ?s ?p ?o }", "SELECT * is not enough"),
        ("?s ?p ?x", "?o unused"),
        ("?s ?p ?o }", "not a valid SPARQL graph pattern"),
        ("INSERT DATA { <a:b> <a:c> <a:d> }", "not a valid SPARQL graph pattern"),
        ("SELECT ?s ?p ?o FROM <http://g> WHERE { ?s ?p ?o }", "use the graph field"),
        ("# only a comment", "empty"),
    ],
)
def test_queries_that_give_no_triples_are_refused(query: str, reason: str) -> None:
    with pytest.raises(QueryError, match=reason.replace("?", r"\?").replace("*", r"\*")):
        triple_query(query)


# -- the handler against a real endpoint ----------------------------------------------------


def test_import_reads_every_page_in_order_with_rising_progress(
    server: SparqlServer, run: Run
) -> None:
    script = Script()
    out = run(endpoint=server.scripted(script), query=ALL, page_size=500)
    assert out.pages == 4 and out.triples == 1992
    assert (out.labels, out.skipped_literals, out.skipped_unusable) == (3, 3, 1)
    assert script.queries[0].lstrip().startswith("SELECT (COUNT(*)")  # the total first
    offsets = [q.rsplit("OFFSET ", 1)[1] for q in script.pages()]
    assert offsets == ["0", "500", "1000", "1500"]
    currents = [p["current"] for p in run.progress]
    assert currents == sorted(currents) and currents[-1] == NATIONS_ROWS
    assert {p["total"] for p in run.progress} == {NATIONS_ROWS}
    triples = run.outputs[m.TRIPLES_FILE].splitlines()
    assert len(triples) == len(set(triples)) == 1992  # pages neither overlap nor leave gaps
    assert f"{EX}usa\thttp://example.org/nations/rel/embassy\t{EX}uk" in triples
    assert json.loads(run.outputs[m.LABELS_FILE])[f"{EX}usa"] == "United States"


def test_limit_named_graph_and_a_full_select(server: SparqlServer, run: Run) -> None:
    limited = run(endpoint=server.endpoint, query=ALL, page_size=300, limit=700)
    assert (limited.triples + limited.skipped_literals + limited.skipped_unusable) == 700
    assert limited.pages == 3 and run.progress[-1] == {**run.progress[-1], "total": 700}
    people = run(
        endpoint=server.endpoint, graph=PEOPLE_GRAPH,
        query="PREFIX foaf: <http://xmlns.com/foaf/0.1/>\n"
        "SELECT ?s ?p ?o WHERE { ?s foaf:knows ?o . BIND(foaf:knows AS ?p) }",
    )  # fmt: skip
    assert (people.triples, people.pages) == (2, 1)
    assert run.outputs[m.TRIPLES_FILE] == (
        f"{EX}alice\thttp://xmlns.com/foaf/0.1/knows\t{EX}bob\n"
        f"{EX}bob\thttp://xmlns.com/foaf/0.1/knows\t{EX}carol\n"
    )


def test_levels_crawl_from_the_entities_the_pattern_reached(
    server: SparqlServer, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.kinds.kge import imports

    monkeypatch.setattr(imports, "CRAWL_BATCH", 1)  # one VALUES block per entity reached
    script = Script()
    pattern = (  # two triples of usa's, reaching china and ussr
        f"VALUES ?p {{ <{REL}duration> <{REL}relbooktranslations> }}\n"
        f"?s ?p ?o FILTER(?s = <{EX}usa>)"
    )
    out = run(endpoint=server.scripted(script), query=pattern, levels=1, page_size=100)
    expected = {(s, p, o) for s, p, o in nations() if s in ("usa", "china", "ussr")}
    got = [tuple(line.split("\t")) for line in run.outputs[m.TRIPLES_FILE].splitlines()]
    assert got == sorted((EX + s, REL + p, EX + o) for s, p, o in expected)
    assert len(got) == 210 + 142 + 168  # every triple of the three entities reached
    crawl = [q for q in script.pages() if "VALUES ?s" in q]
    assert {q.split("VALUES ?s { ", 1)[1].split(" }")[0] for q in crawl} == {
        f"<{EX}usa>",
        f"<{EX}china>",
        f"<{EX}ussr>",
    }
    labels = json.loads(run.outputs[m.LABELS_FILE])
    assert labels == {f"{EX}usa": LABELS["usa"], f"{EX}ussr": LABELS["ussr"]}
    assert out.pages == len(script.pages()) >= 1 + 3 + 2  # several pages per crawl block
    # The original's progress: within each step a known total, the steps in the message.
    first = [p for p in run.progress if str(p["message"]).startswith("step 1/2: ")]
    level = [p for p in run.progress if str(p["message"]).startswith("step 2/2: ")]
    assert len(first) + len(level) == len(run.progress)
    assert {p["total"] for p in first} == {2} and first[-1]["current"] == 2
    assert {p["total"] for p in level} == {3} and level[-1]["current"] == 3
    for step in (first, level):
        assert [p["current"] for p in step] == sorted(p["current"] for p in step)


def test_a_500_is_retried_and_the_import_completes(server: SparqlServer, run: Run) -> None:
    script = Script(faults=[Fault(500, "busy"), Fault(503, "still busy")])
    out = run(endpoint=server.scripted(script), query=ALL, page_size=1000)
    assert out.triples == 1992 and out.pages == 2
    assert len(script.queries) == 2 + 1 + 2  # the count failed twice, then count + 2 pages
    assert any("HTTP 500: busy" in line and "retrying" in line for line in run.logs), run.logs


def test_a_400_fails_at_once_with_the_endpoints_message(server: SparqlServer, run: Run) -> None:
    message = "Virtuoso 37000 Error SP030: SPARQL compiler, line 3: syntax error"
    script = Script(faults=[Fault(400, message), Fault(400, message)])
    with pytest.raises(PermanentError, match="HTTP 400: Virtuoso 37000 Error SP030"):
        run(endpoint=server.scripted(script), query=ALL)
    assert len(script.queries) == 2  # the count (no total, then) and one page: no retries


def test_malformed_results_fail_the_import(server: SparqlServer, run: Run) -> None:
    broken = Fault(200, '{"head": {"vars": ["s", "p", "o"]}, "results": {"bind', RESULTS_JSON)
    script = Script(faults=[broken, broken])
    with pytest.raises(PermanentError, match="not valid SPARQL results"):
        run(endpoint=server.scripted(script), query=ALL)
    html = Script(faults=[Fault(200, "<html>maintenance</html>", "text/html")] * 2)
    with pytest.raises(PermanentError, match=r"\(text/html\) is not valid SPARQL results"):
        run(endpoint=server.scripted(html), query=ALL)


def test_cancel_stops_between_pages(server: SparqlServer, run: Run) -> None:
    script = Script()
    run.cancel_after_pages = 2
    with pytest.raises(JobCancelled):
        run(endpoint=server.scripted(script), query=ALL, page_size=200)
    assert len(script.pages()) == 2  # nothing asked after the cancel


def test_cancel_cuts_a_retry_backoff_short(server: SparqlServer, run: Run) -> None:
    script = Script(faults=[Fault(503, "overloaded")] * 5)
    run.cancel_on_retry = True
    with pytest.raises(JobCancelled):
        run(endpoint=server.scripted(script), query=ALL, retries=5)
    assert len(script.queries) == 1  # cancelled while waiting to retry: no second request


def test_the_ssrf_guard_refuses_addresses_the_operator_did_not_allow(
    server: SparqlServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_CALLBACK_ALLOW", LOOPBACK)
    script = Script()
    other_loopback = server.scripted(script).replace("127.0.0.1", "127.0.0.2")
    with pytest.raises(PermanentError, match=r"127\.0\.0\.2, a loopback address"):
        Run(tmp_path)(endpoint=other_loopback, query=ALL)
    monkeypatch.delenv("CONVEYOR_CALLBACK_ALLOW")
    with pytest.raises(PermanentError, match="CONVEYOR_CALLBACK_ALLOW"):
        Run(tmp_path)(endpoint=server.scripted(script), query=ALL)
    assert script.queries == []  # no request ever left


# -- through the /kge API and a worker process ---------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with running_api(tmp_path_factory.mktemp("kge-sparql"), CONVEYOR_CALLBACK_ALLOW=LOOPBACK) as e:
        yield e


def test_generate_triples_pages_with_progress_then_trains(
    env: Env, server: SparqlServer, allow_loopback: None
) -> None:
    dataset_id = env.dataset("from-sparql")
    pattern = "?subject ?predicate ?object"  # the original's variables
    body = {"generate_triples": {"endpoint": server.endpoint, "graph_pattern": pattern,
                                 "batch_size": 250, "levels": 0}}  # fmt: skip
    r = env.http.post(f"/kge/datasets/{dataset_id}/generate_triples", json=body)
    assert r.status_code == 202, r.text
    task_id = r.json()["task"]["id"]
    assert r.headers["location"] == f"/kge/tasks/{task_id}"
    seen = env.finish(task_id, timeout=120)
    assert seen[-1]["state"] == "SUCCESS", seen[-1]
    currents = [s["progress"]["current"] for s in seen if "progress" in s]
    assert currents == sorted(currents) and seen[-1]["progress"]["current"] == NATIONS_ROWS
    assert seen[-1]["progress"]["total"] == NATIONS_ROWS
    assert (seen[-1]["progress"]["current_steps"], seen[-1]["progress"]["total_steps"]) == (1, 1)
    r = env.http.get(f"/kge/tasks/{task_id}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/kge/datasets/{dataset_id}"
    job = env.store.get(task_id)
    assert job.kind == "kge.import" and job.result is not None and job.result["pages"] == 8
    dataset = env.http.get(f"/kge/datasets/{dataset_id}").json()["dataset"]
    assert (dataset["triples"], dataset["entities"], dataset["relations"]) == (1992, 14, 55)
    algorithm_id = env.algorithm(model="TransE", embedding_size=8, max_epochs=3)
    r = env.http.post(f"/kge/datasets/{dataset_id}/train", params={"algorithm_id": algorithm_id})
    assert r.status_code == 202, r.text
    assert env.finish(r.json()["task"]["id"], timeout=120)[-1]["state"] == "SUCCESS"
    found = env.http.post(f"/kge/datasets/{dataset_id}/suggest_name", json={"input": "soviet"})
    assert [s["entity"]["entity"] for s in found.json()] == [f"{EX}ussr"]  # imported label


def test_a_refusing_endpoint_fails_the_task_with_its_message(
    env: Env, server: SparqlServer, allow_loopback: None
) -> None:
    dataset_id = env.dataset("refused")
    script = Script(faults=[Fault(400, "Parse error: unknown prefix wdt:")] * 2)
    body = {"endpoint": server.scripted(script), "query": ALL}
    r = env.http.post(f"/kge/datasets/{dataset_id}/import/sparql", json=body)
    assert r.status_code == 202, r.text
    last = env.finish(r.json()["task"]["id"], timeout=60)[-1]
    assert last["state"] == "FAILURE"
    assert "HTTP 400: Parse error: unknown prefix wdt:" in last["error"]["exception"]
    assert env.store.get(r.json()["task"]["id"]).attempt == 1  # a refusal is not retried
    assert env.http.get(f"/kge/datasets/{dataset_id}").json()["dataset"]["triples"] == 0


def test_bad_queries_and_unsafe_endpoints_are_422_at_submit(
    env: Env, server: SparqlServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_CALLBACK_ALLOW", LOOPBACK)
    dataset_id = env.dataset("refused-at-submit")
    url = f"/kge/datasets/{dataset_id}/import/sparql"
    for query, reason in (
        ("CONSTRUCT WHERE { ?s ?p ?o }", "only SELECT"),
        ("SELECT ?s WHERE { ?s ?p ?o }", "missing ?p, ?o"),
    ):
        r = env.http.post(url, json={"endpoint": server.endpoint, "query": query})
        assert r.status_code == 422 and reason in r.text, r.text
    levels = {"endpoint": server.endpoint, "graph_pattern": ALL, "levels": 9}
    r = env.http.post(f"/kge/datasets/{dataset_id}/generate_triples",
                      json={"generate_triples": levels})  # fmt: skip
    assert r.status_code == 422 and "levels" in r.text
    for internal in ("http://169.254.169.254/sparql", "http://10.1.2.3:8890/sparql"):
        r = env.http.post(url, json={"endpoint": internal, "query": ALL})
        assert r.status_code == 422 and r.json()["type"].endswith("unsafe-url"), r.text
    monkeypatch.delenv("CONVEYOR_CALLBACK_ALLOW")
    r = env.http.post(url, json={"endpoint": server.endpoint, "query": ALL})
    assert r.status_code == 422 and "a loopback address" in r.json()["detail"]
    assert env.http.get(f"/kge/datasets/{dataset_id}").json()["dataset"]["task"] is None


def test_cancel_mid_import_revokes_the_task_and_adds_nothing(
    env: Env, server: SparqlServer, allow_loopback: None
) -> None:
    dataset_id = env.dataset("cancelled-import")
    script = Script(open_pages=1)  # the second page waits until the test opens the gate
    body = {"endpoint": server.scripted(script), "query": ALL, "page_size": 100}
    r = env.http.post(f"/kge/datasets/{dataset_id}/import/sparql", json=body)
    assert r.status_code == 202, r.text
    task_id = r.json()["task"]["id"]
    assert script.held.wait(60)
    assert env.http.delete(f"/kge/tasks/{task_id}").status_code == 204
    seen = env.finish(task_id, timeout=60)
    script.gate.set()
    assert seen[-1]["state"] == "REVOKED"
    assert env.store.get(task_id).state is JobState.CANCELLED
    assert len(script.pages()) == 2  # of 20
    dataset = env.http.get(f"/kge/datasets/{dataset_id}").json()["dataset"]
    assert dataset["triples"] == 0 and dataset["task"] is None


def test_jobs_submitted_through_v1_are_checked_by_the_worker(
    env: Env, server: SparqlServer
) -> None:
    """/v1 checks input against the kind's JSON Schema only; the worker refuses the rest."""
    script = Script()
    inputs = {
        "only SELECT": {"endpoint": server.scripted(script), "query": "ASK { ?s ?p ?o }"},
        "127.0.0.2, a loopback address": {  # the worker allows 127.0.0.1/32 only
            "endpoint": server.scripted(script).replace("127.0.0.1", "127.0.0.2"),
            "query": ALL,
        },
    }
    for reason, source in inputs.items():
        r = env.http.post("/v1/jobs", json={"kind": "kge.import", "input": {"sparql": source}})
        assert r.status_code == 201, r.text
        job = final(env, r.json()["id"])
        assert job.state is JobState.FAILED and job.attempt == 1, job
        assert job.error is not None and reason in job.error.message, job.error
    assert script.queries == []


def final(env: Env, job_id: str) -> Job:
    return wait_for(lambda: (job := env.store.get(job_id)).state.is_final and job, 60, what=job_id)
