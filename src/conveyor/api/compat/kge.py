"""The kge-server REST API at `/kge/…`, on `kge.train`, `kge.index` and `kge.import` jobs.

Same paths and answer shapes as the original Falcon service (seed-systems.md §1), with its
defects fixed: `train` takes `algorithm_id=` and the documented `algorithm=`; `DELETE
/kge/tasks/{id}` cancels the job; task ids are the jobs' ids (no process-global counter);
triples errors list every malformed line; state lives in the store, not in one process.
Task states are Celery's words: PENDING (queued/scheduled), STARTED, SUCCESS, FAILURE,
REVOKED (cancelled). Label search (`suggest_name`) is SQLite FTS5 over the trained entities'
labels (imported `rdfs:label`s, and words made from the URIs) in the API process (see
`conveyor.kinds.kge.vectors`), not Elasticsearch.

`generate_triples` reads a graph pattern from the SPARQL endpoint the caller names (the
original's was hard-coded to Wikidata, and it paged without ORDER BY); `/import/sparql` takes
the whole `kge.import` SPARQL source. Both queue a `kge.import` job; the query is checked at
submit (422) and the endpoint must pass the SSRF guard (422, `unsafe-url`).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool

from conveyor import errors
from conveyor.api.auth import Principal, require_scope
from conveyor.api.deps import ServiceDep
from conveyor.api.problems import problem
from conveyor.api.routes.jobs import read_json
from conveyor.kinds.kge import datasets as ds
from conveyor.kinds.kge import models as m
from conveyor.kinds.kge import vectors
from conveyor.kinds.kge.sparql import original_pattern
from conveyor.kinds.kge.triples import TriplesError, parse_json, parse_rdf, parse_tsv
from conveyor.models import Job, JobState
from conveyor.service import Service

router = APIRouter(prefix="/kge", tags=["kge (kge-server API)"])

MAX_BODY = 64 << 20
STEP = re.compile(r"^step (\d+)/(\d+): ")
CELERY = {
    JobState.BLOCKED: "PENDING",
    JobState.SCHEDULED: "PENDING",
    JobState.QUEUED: "PENDING",
    JobState.RUNNING: "STARTED",
    JobState.SUCCEEDED: "SUCCESS",
    JobState.FAILED: "FAILURE",
    JobState.CANCELLED: "REVOKED",
}
Reader = Annotated[Principal, Depends(require_scope("read"))]
Submitter = Annotated[Principal, Depends(require_scope("submit"))]
Ignore = Annotated[bool, Query(description="Bypass the dataset status guard (409).")]
Limit = Annotated[int, Query(ge=1, le=1000)]
SearchK = Annotated[int, Query(ge=-1, le=100_000, description="-1: the index's default.")]


class NewDataset(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=10_000)


class DatasetUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    description: str = Field(max_length=10_000)


class NewAlgorithm(BaseModel):
    algorithm: m.Algorithm


class EmbeddingsQuery(BaseModel):
    entities: list[str] = Field(min_length=1, max_length=10_000)


class DistanceQuery(BaseModel):
    distance: list[str] = Field(min_length=2, max_length=2)


class EntityRef(BaseModel):
    value: str | list[float]
    type: str = Field("uri", pattern="^(uri|embedding)$")


class SimilarQuery(BaseModel):
    entity: EntityRef


class AutocompleteQuery(BaseModel):
    """The original's body: `{"langs": ["en", "es"]}` (ISO 639 codes)."""

    langs: list[Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]] = Field(min_length=1, max_length=20)


class BadQuery(ValueError):
    """422: a query the dataset cannot answer as asked (an embedding of the wrong size)."""


class GenerateTriples(BaseModel):
    """The original's `{"generate_triples": {"graph_pattern", "levels", "batch_size"}}` (a
    pattern binding ?subject ?predicate ?object, as the original's, or ?s ?p ?o), plus the
    endpoint it had hard-coded (Wikidata) and the other `SparqlSource` fields."""

    generate_triples: m.SparqlSource

    @field_validator("generate_triples", mode="before")
    @classmethod
    def _original_names(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        value = dict(value)
        for old, new in (("graph_pattern", "query"), ("batch_size", "page_size")):
            if old in value and new in value:
                raise ValueError(f"give {old} or {new}, not both")
            if old in value:
                value[new] = value.pop(old)
        if isinstance(value.get("query"), str):
            value["query"] = original_pattern(value["query"])
        return value


class SuggestQuery(BaseModel):
    input: str = Field(min_length=1, max_length=500)


def _problem(exc: Exception) -> JSONResponse:
    if isinstance(exc, vectors.UnknownEntities):
        return problem(404, "kge-entity-not-found", str(exc), entities=exc.names)
    if isinstance(exc, ds.NotFound):
        return problem(404, "kge-not-found", str(exc))
    if isinstance(exc, ds.Conflict):
        return problem(409, "kge-conflict", str(exc))
    if isinstance(exc, BadQuery):
        return problem(422, "kge-bad-query", str(exc))
    if isinstance(exc, TriplesError):
        lines = [{"line": n, "error": why} for n, why in exc.lines]
        return problem(400, "kge-malformed-triples", str(exc), lines=lines)
    raise exc


async def _call(fn: Any, *args: Any) -> Any:
    """Run a blocking use case; turn its domain errors into problem+json."""
    try:
        return await run_in_threadpool(fn, *args)
    except (ds.NotFound, ds.Conflict, vectors.UnknownEntities, TriplesError, BadQuery) as exc:
        return _problem(exc)


async def _body(request: Request, model: type[BaseModel]) -> Any:
    data = await read_json(request, MAX_BODY)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ["body", *e["loc"]]} for e in exc.errors(include_url=False)]
        ) from None


def _accepted(job: Job, dataset_id: int) -> JSONResponse:
    return JSONResponse(
        {
            "status": 202,
            "message": f"Task {job.id} created successfully",
            "task": {"id": job.id, "next": f"/kge/datasets/{dataset_id}"},
        },
        status_code=202,
        headers={"Location": f"/kge/tasks/{job.id}"},
    )


# -- datasets ----------------------------------------------------------------------------------


@router.get("/datasets/", summary="All datasets")
async def list_datasets(service: ServiceDep, _: Reader) -> Any:
    found = await run_in_threadpool(ds.listing, service)
    return [{"dataset": ds.public(d)} for d in found]  # each wrapped, as the original


@router.post("/datasets/", status_code=201, summary="Create a dataset")
async def create_dataset(request: Request, service: ServiceDep, _: Submitter) -> Any:
    body: NewDataset = await _body(request, NewDataset)
    record = await _call(ds.create, service, body.name, body.description)
    if isinstance(record, Response):
        return record
    return JSONResponse(
        {"dataset": {"id": record["id"]}},
        status_code=201,
        headers={"Location": f"/kge/datasets/{record['id']}"},
    )


@router.get("/datasets/{dataset_id}", summary="One dataset")
async def get_dataset(dataset_id: int, service: ServiceDep, _: Reader) -> Any:
    record = await _call(ds.get, service, dataset_id)
    return record if isinstance(record, Response) else {"dataset": ds.public(record)}


def _describe(service: Service, dataset_id: int, description: str) -> dict[str, Any]:
    record = ds.get(service, dataset_id)
    record["description"] = description
    ds.save(service, record)
    return record


@router.put("/datasets/{dataset_id}", summary="Change a dataset's description")
async def put_dataset(dataset_id: int, request: Request, service: ServiceDep, _: Submitter) -> Any:
    body: DatasetUpdate = await _body(request, DatasetUpdate)
    record = await _call(_describe, service, dataset_id, body.description)
    return record if isinstance(record, Response) else {"dataset": ds.public(record)}


@router.delete("/datasets/{dataset_id}", status_code=204, summary="Delete a dataset")
async def delete_dataset(dataset_id: int, service: ServiceDep, _: Submitter) -> Response:
    done = await _call(ds.delete, service, dataset_id)
    return done if isinstance(done, Response) else Response(status_code=204)


async def _triples(request: Request) -> list[tuple[str, str, str]]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise TriplesError([(0, f"larger than {MAX_BODY} bytes; use /import")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TriplesError([(0, "the body is not UTF-8")]) from None
    if kind == "application/n-triples":
        triples, _, _ = await run_in_threadpool(parse_rdf, text, "nt")
        return triples
    if kind in ("text/tab-separated-values", "text/plain"):
        return parse_tsv(text)
    if kind == "application/json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TriplesError([(exc.lineno, f"not valid JSON: {exc.msg}")]) from None
        if not isinstance(data, dict) or "triples" not in data:
            raise TriplesError([(0, 'the body must be {"triples": [...]}')])
        return parse_json(data["triples"])
    return parse_tsv(text)  # no (or another) content type and not JSON: tab-separated lines


@router.post("/datasets/{dataset_id}/triples", status_code=202, summary="Add triples")
async def add_triples(
    dataset_id: int, request: Request, service: ServiceDep, _: Submitter,
    ignore_status: Ignore = False,
) -> Any:  # fmt: skip
    """JSON `{"triples": [{"subject": {"value"}, ...}]}`, or a TSV / N-Triples body."""
    try:
        triples = await _triples(request)
    except TriplesError as exc:
        return _problem(exc)
    done = await _call(ds.add_triples, service, dataset_id, triples, ignore_status)
    if isinstance(done, Response):
        return done
    return JSONResponse(
        {"status": 202, "message": f"{len(triples)} triples added", "triples": done["triples"]},
        status_code=202,
    )


@router.post(
    "/datasets/{dataset_id}/generate_autocomplete_index", status_code=202,
    summary="Build the label search index (suggest_name)",
)  # fmt: skip
async def generate_autocomplete_index(
    dataset_id: int, request: Request, service: ServiceDep, _: Submitter,
    ignore_status: Ignore = False,
) -> Any:  # fmt: skip
    """The original's call (`{"langs": [...]}`); a `kge.autocomplete` job builds the table
    `suggest_name` searches. Needs a trained dataset (409)."""
    body: AutocompleteQuery = await _body(request, AutocompleteQuery)
    job = await _call(ds.build_autocomplete, service, dataset_id, body.langs, ignore_status)
    return job if isinstance(job, Response) else _accepted(job, dataset_id)


@router.post("/datasets/{dataset_id}/import", status_code=202, summary="Import an RDF file")
async def import_file(
    dataset_id: int, request: Request, service: ServiceDep, _: Submitter,
    format: Annotated[str, Query(pattern="^(nt|turtle|tsv)$")] = "nt",
    ignore_status: Ignore = False,
) -> Any:  # fmt: skip
    """The body is an N-Triples, Turtle or TSV file, parsed by a `kge.import` job."""
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            return problem(413, "file-too-large", f"larger than {MAX_BODY} bytes")
    job = await _call(ds.start_import, service, dataset_id, bytes(raw), format, ignore_status)
    return job if isinstance(job, Response) else _accepted(job, dataset_id)


@router.post("/datasets/{dataset_id}/import/sparql", status_code=202, summary="Import from SPARQL")
async def import_sparql(
    dataset_id: int, request: Request, service: ServiceDep, _: Submitter,
    ignore_status: Ignore = False,
) -> Any:  # fmt: skip
    """The body is a `kge.import` SPARQL source: `{"endpoint", "query", "graph", "levels",
    "page_size", "limit", "timeout_s", "retries"}`; a `kge.import` job pages through it."""
    body: m.SparqlSource = await _body(request, m.SparqlSource)
    job = await _call(ds.start_sparql_import, service, dataset_id, body, ignore_status)
    return job if isinstance(job, Response) else _accepted(job, dataset_id)


@router.post(
    "/datasets/{dataset_id}/generate_triples", status_code=202, summary="Import a graph pattern"
)
async def generate_triples(
    dataset_id: int, request: Request, service: ServiceDep, _: Submitter,
    ignore_status: Ignore = False,
) -> Any:  # fmt: skip
    """The original's call: `{"generate_triples": {"endpoint", "graph_pattern", "levels",
    "batch_size"}}`; the same job as `/import/sparql`."""
    body: GenerateTriples = await _body(request, GenerateTriples)
    source = body.generate_triples
    job = await _call(ds.start_sparql_import, service, dataset_id, source, ignore_status)
    return job if isinstance(job, Response) else _accepted(job, dataset_id)


@router.post("/datasets/{dataset_id}/train", status_code=202, summary="Train an embedding")
async def train(
    dataset_id: int, service: ServiceDep, _: Submitter,
    algorithm_id: Annotated[int | None, Query(ge=1)] = None,
    algorithm: Annotated[int | None, Query(ge=1, description="Alias of algorithm_id.")] = None,
    ignore_status: Ignore = False,
) -> Any:  # fmt: skip
    chosen = algorithm_id if algorithm_id is not None else algorithm
    if chosen is None:
        return problem(400, "kge-bad-request", "give ?algorithm_id= (or ?algorithm=)")
    job = await _call(ds.train, service, dataset_id, chosen, ignore_status)
    return job if isinstance(job, Response) else _accepted(job, dataset_id)


@router.post("/datasets/{dataset_id}/generate_index", status_code=202, summary="Build the index")
async def generate_index(
    dataset_id: int, service: ServiceDep, _: Submitter,
    m_degree: Annotated[int, Query(alias="m", ge=4, le=96)] = 16,
    ef_construction: Annotated[int, Query(ge=10, le=2000)] = 200,
    n_trees: Annotated[int | None, Query(description="Annoy's knob; ignored (HNSW).")] = None,
    ignore_status: Ignore = False,
) -> Any:  # fmt: skip
    params = m.IndexInput(m=m_degree, ef_construction=ef_construction)
    job = await _call(ds.build_index, service, dataset_id, params, ignore_status)
    return job if isinstance(job, Response) else _accepted(job, dataset_id)


# -- queries on a trained dataset ----------------------------------------------------------------


def _trained(
    service: Service, dataset_id: int, indexed: bool = False
) -> tuple[dict[str, Any], vectors.Trained]:
    """The dataset and its trained model (409 unless trained, or indexed when asked)."""
    record = ds.get(service, dataset_id)
    if record["model_job"] is None or record["status"] == ds.UNTRAINED:
        raise ds.Conflict(f"dataset {dataset_id} is not trained")
    if indexed and record["index_job"] is None:
        raise ds.Conflict(f"dataset {dataset_id} has no index; POST .../generate_index first")
    model = vectors.load(
        service.storage, record["model_job"], record["index_job"],
        lambda: ds.labels(service, dataset_id), record.get("autocomplete_job"),
    )  # fmt: skip
    return record, model


def _embeddings(service: Service, dataset_id: int, names: list[str]) -> dict[str, Any]:
    _, model = _trained(service, dataset_id)
    rows = model.rows(names)
    return {
        "embeddings": [[n, model.vectors[r].tolist()] for n, r in zip(names, rows, strict=True)]
    }


@router.post("/datasets/{dataset_id}/embeddings", summary="Entity embeddings")
async def embeddings(dataset_id: int, request: Request, service: ServiceDep, _: Reader) -> Any:
    body: EmbeddingsQuery = await _body(request, EmbeddingsQuery)
    return await _call(_embeddings, service, dataset_id, body.entities)


def _distance(service: Service, dataset_id: int, a: str, b: str) -> dict[str, Any]:
    return {"distance": _trained(service, dataset_id)[1].distance(a, b)}


@router.post("/datasets/{dataset_id}/distance", summary="Distance between two entities")
async def distance(dataset_id: int, request: Request, service: ServiceDep, _: Reader) -> Any:
    body: DistanceQuery = await _body(request, DistanceQuery)
    return await _call(_distance, service, dataset_id, body.distance[0], body.distance[1])


def _similar(
    service: Service, dataset_id: int, ref: EntityRef, limit: int, search_k: int
) -> dict[str, Any]:
    """As the original: `limit + 1` nearest entities (a URI's own entity comes first, at
    distance 0, and counts), `limit` in the answer is how many were found, `search_k` is
    echoed (-1: the index's default)."""
    record, model = _trained(service, dataset_id, indexed=True)
    if ref.type == "uri":
        if not isinstance(ref.value, str):
            raise BadQuery("entity.value must be a URI string when entity.type is uri")
        vector = model.embedding(ref.value)
    else:
        size = model.vectors.shape[1]
        if not isinstance(ref.value, list) or len(ref.value) != size:
            got = len(ref.value) if isinstance(ref.value, list) else "a string"
            raise BadQuery(f"this dataset's embeddings have {size} numbers, not {got}")
        vector = np.asarray(ref.value, dtype=np.float32)
    found = model.similar(vector, limit + 1, search_k if search_k > 0 else None)
    return {
        "similar_entities": {
            "entity": {"value": ref.value, "type": ref.type},
            "limit": len(found),
            "search_k": search_k,
            "response": [{"distance": d, "entity": e} for d, e in found],
        },
        "dataset": ds.public(record),
    }


@router.get("/datasets/{dataset_id}/similar_entities/{entity:path}", summary="Similar entities")
async def similar_get(
    dataset_id: int, entity: str, service: ServiceDep, _: Reader,
    limit: Limit = 10, search_k: SearchK = -1,
) -> Any:  # fmt: skip
    ref = EntityRef(value=entity, type="uri")
    return await _call(_similar, service, dataset_id, ref, limit, search_k)


@router.post("/datasets/{dataset_id}/similar_entities", summary="Similar entities (or vector)")
async def similar_post(
    dataset_id: int, request: Request, service: ServiceDep, _: Reader,
    limit: Limit = 10, search_k: SearchK = -1,
) -> Any:  # fmt: skip
    body: SimilarQuery = await _body(request, SimilarQuery)
    return await _call(_similar, service, dataset_id, body.entity, limit, search_k)


def _suggest(service: Service, dataset_id: int, text: str) -> list[dict[str, Any]]:
    _, model = _trained(service, dataset_id)
    out = []
    for entity in model.suggest(text):
        label = model.label(entity)
        info = {"label": label, "alt_label": [], "description": "", "entity": entity}
        out.append({"text": label, "entity": info})
    return out


@router.post("/datasets/{dataset_id}/suggest_name", summary="Entities by label prefix")
async def suggest_name(dataset_id: int, request: Request, service: ServiceDep, _: Reader) -> Any:
    body: SuggestQuery = await _body(request, SuggestQuery)
    return await _call(_suggest, service, dataset_id, body.input)


# -- algorithms ---------------------------------------------------------------------------------


@router.get("/algorithms/", summary="Training algorithms (hyper-parameter sets)")
async def list_algorithms(service: ServiceDep, _: Reader) -> Any:
    return await run_in_threadpool(ds.algorithms, service)  # a bare list, as the original


@router.get("/algorithms/{algorithm_id}", summary="One algorithm")
async def get_algorithm(algorithm_id: int, service: ServiceDep, _: Reader) -> Any:
    found = await _call(ds.algorithm, service, algorithm_id)
    return found  # a bare object (or the 404), as the original


@router.post("/algorithms/", status_code=201, summary="Add an algorithm")
async def create_algorithm(request: Request, service: ServiceDep, _: Submitter) -> Any:
    """`{"algorithm": {"model", "embedding_size", "max_epochs", "margin", "learning_rate",
    "batch_size"}}`; out-of-range values are refused with 422."""
    body: NewAlgorithm = await _body(request, NewAlgorithm)
    record = await run_in_threadpool(ds.create_algorithm, service, body.algorithm)
    return JSONResponse(
        {"status": 201, "message": "Algorithm created successfully", "algorithm": record},
        status_code=201,
        headers={"Location": f"/kge/algorithms/{record['id']}"},
    )


# -- tasks --------------------------------------------------------------------------------------


def _task(service: Service, task_id: str, debug: bool) -> tuple[dict[str, Any], str | None]:
    job = ds.task_job(service, task_id)
    dataset = (job.input or {}).get("dataset")
    if dataset is not None and service.store.get_record(ds.DATASETS, ds._key(dataset)):
        ds.get(service, int(dataset))  # applies the outcome to the dataset
    else:
        dataset = None  # deleted since: nothing to redirect to (its id is never given again)
    task: dict[str, Any] = {"id": job.id, "state": CELERY[job.state]}
    progress = job.progress
    if progress is not None:
        task["progress"] = progress_of(progress.current, progress.total, progress.message)
    if job.state is JobState.FAILED and job.error is not None:
        task["error"] = {"exception": job.error.message, "type": job.error.type}
        if debug:
            task["error"]["traceback"] = job.error.traceback
    if debug:
        task["debug"] = {"kind": job.kind, "conveyor_state": job.state.value,
                         "attempt": job.attempt}  # fmt: skip
    done = job.state is JobState.SUCCEEDED and dataset is not None
    return {"task": task}, (f"/kge/datasets/{dataset}" if done else None)


def progress_of(current: float, total: float | None, message: str | None) -> dict[str, Any]:
    """The original's progress: `current`/`total` within the current step, and the steps
    (`step k/n:` in the job's message, as kge.import writes it; else one step: the job).
    `total` is null only while it is unknown (an endpoint that refuses to count)."""
    found = STEP.match(message or "")
    steps = (int(found[1]), int(found[2])) if found else (1, 1)
    return {"current": current, "total": total, "current_steps": steps[0],
            "total_steps": steps[1], "message": message}  # fmt: skip


@router.get("/tasks/{task_id}", summary="A task's state and progress (303 when done)")
async def get_task(
    task_id: str, service: ServiceDep, _: Reader,
    no_redirect: bool = False, get_debug_info: bool = False,
) -> Any:  # fmt: skip
    found = await _call(_task, service, task_id, get_debug_info)
    if isinstance(found, Response):
        return found
    body, next_url = found
    if next_url is None:
        return body
    return JSONResponse(body, status_code=200 if no_redirect else 303,
                        headers={"Location": next_url})  # fmt: skip


def _cancel(service: Service, task_id: str) -> Job:
    job = ds.task_job(service, task_id)
    if job.state.is_final:
        raise ds.Conflict(f"task {task_id} already ended ({CELERY[job.state]})")
    try:
        return service.cancel(job.id)
    except errors.InvalidStateError as exc:
        raise ds.Conflict(str(exc)) from None


@router.delete("/tasks/{task_id}", status_code=204, summary="Cancel a task")
async def cancel_task(task_id: str, service: ServiceDep, _: Submitter) -> Response:
    done = await _call(_cancel, service, task_id)
    return done if isinstance(done, Response) else Response(status_code=204)
