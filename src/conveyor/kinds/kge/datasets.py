"""kge-server state on the conveyor store: datasets, algorithms and the jobs that build them.

A dataset is a record (`kge.datasets`); its triples are one blob (`kge/datasets/<id>/…`). A
training, indexing or import run is an ordinary conveyor job; the dataset remembers the job
it waits for and takes its outcome the next time anyone reads the dataset or the task, so a
dataset's status never depends on a web process having seen the job finish.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from conveyor import errors
from conveyor.api import staging
from conveyor.kinds.kge import models as m
from conveyor.kinds.kge.triples import Triple, parse_tsv, to_tsv
from conveyor.kinds.registry import registry
from conveyor.models import Job, JobState, NewJob
from conveyor.service import Service
from conveyor.storage import job_key
from conveyor.webhooks.ssrf import CallbackPolicy

DATASETS = "kge.datasets"
ALGORITHMS = "kge.algorithms"
COUNTERS = "kge.counters"
UNTRAINED, TRAINED, INDEXED = "untrained", "trained", "indexed"
KINDS = ("kge.train", "kge.index", "kge.import", "kge.autocomplete")
# The original's `status` bit mask (data_access/dataset_dto.py): a task runs, trained, the
# similarity index is built, the search (autocomplete) index is built.
RUNNING_BIT, TRAINED_BIT, INDEXED_BIT, SEARCH_BIT = 0b0001, 0b0010, 0b0100, 0b1000
STATUS_BITS = {UNTRAINED: 0, TRAINED: TRAINED_BIT, INDEXED: TRAINED_BIT | INDEXED_BIT}
DEFAULT_ALGORITHM = m.Algorithm(model="TransE", embedding_size=50, max_epochs=80, margin=2.0)


class NotFound(LookupError):
    """404: the named dataset, algorithm, task or entity does not exist."""


class Conflict(RuntimeError):
    """409: the dataset's status does not allow the operation."""


def _key(n: int) -> str:
    return f"{n:012d}"  # zero-padded so records list in numeric order


def _new_id(service: Service, collection: str) -> int:
    """The next small integer id (the original's ids), never one given before: a deleted
    dataset's id stays retired, so its old tasks never lead to a newer dataset. Skips ids
    taken by a racing writer."""
    records = service.store.list_records(collection)
    issued = (service.store.get_record(COUNTERS, collection) or {}).get("last", 0)
    n = max(int(issued), int(records[-1][0]) if records else 0) + 1
    while service.store.get_record(collection, _key(n)) is not None:
        n += 1
    service.store.put_record(COUNTERS, collection, {"last": n})
    return n


def triples_key(dataset_id: int) -> str:
    return f"kge/datasets/{dataset_id}/{m.TRIPLES_FILE}"


def labels_key(dataset_id: int) -> str:
    return f"kge/datasets/{dataset_id}/{m.LABELS_FILE}"


def labels(service: Service, dataset_id: int) -> dict[str, str]:
    """The dataset's entity labels (from imported `rdfs:label`/`skos:prefLabel`), or {}."""
    try:
        found = json.loads(b"".join(service.storage.read(labels_key(dataset_id))))
    except (errors.ConveyorError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _merge_labels(service: Service, dataset_id: int, job_id: str) -> None:
    try:
        new = json.loads(b"".join(service.storage.read(job_key(job_id, "out", m.LABELS_FILE))))
    except (errors.ConveyorError, ValueError):
        return  # the import found no labels file to add
    if isinstance(new, dict) and new:
        merged = {**labels(service, dataset_id), **new}
        service.storage.write(labels_key(dataset_id), [json.dumps(merged).encode()])


# -- algorithms ------------------------------------------------------------------------------


def algorithms(service: Service) -> list[dict[str, Any]]:
    found = [value for _, value in service.store.list_records(ALGORITHMS)]
    if not found:  # the original shipped with one algorithm; so does a new store
        found = [create_algorithm(service, DEFAULT_ALGORITHM)]
    return found


def create_algorithm(service: Service, algorithm: m.Algorithm) -> dict[str, Any]:
    n = _new_id(service, ALGORITHMS)
    record = {"id": n, **algorithm.model_dump()}
    service.store.put_record(ALGORITHMS, _key(n), record)
    return record


def algorithm(service: Service, algorithm_id: int) -> dict[str, Any]:
    algorithms(service)  # seeds the default one
    found = service.store.get_record(ALGORITHMS, _key(algorithm_id))
    if found is None:
        raise NotFound(f"algorithm {algorithm_id} not found")
    return found


# -- datasets --------------------------------------------------------------------------------


def create(service: Service, name: str, description: str) -> dict[str, Any]:
    if any(d.get("name") == name for _, d in service.store.list_records(DATASETS)):
        raise Conflict(f"a dataset named {name!r} exists")
    n = _new_id(service, DATASETS)
    record: dict[str, Any] = {
        "id": n, "name": name, "description": description, "status": UNTRAINED,
        "triples": 0, "entities": 0, "relations": 0, "algorithm": None, "task": None,
        "model_job": None, "index_job": None, "metrics": None, "imported": [],
    }  # fmt: skip
    service.store.put_record(DATASETS, _key(n), record)
    return record


def get(service: Service, dataset_id: int) -> dict[str, Any]:
    """The dataset, with the outcome of its finished task applied."""
    record = service.store.get_record(DATASETS, _key(dataset_id))
    if record is None:
        raise NotFound(f"dataset {dataset_id} not found")
    return refresh(service, record)


def listing(service: Service) -> list[dict[str, Any]]:
    return [refresh(service, d) for _, d in service.store.list_records(DATASETS)]


def save(service: Service, record: dict[str, Any]) -> None:
    service.store.put_record(DATASETS, _key(record["id"]), record)


def status_code(record: dict[str, Any]) -> int:
    """The original's integer status: 0 untrained, 2 trained, 6 indexed, +8 with the search
    index, +1 while a task runs."""
    code = STATUS_BITS[record["status"]]
    if record.get("autocomplete_job"):
        code |= SEARCH_BIT
    return code | (RUNNING_BIT if record.get("task") else 0)


def public(record: dict[str, Any]) -> dict[str, Any]:
    """The dataset as the API shows it (the original's fields plus task and metrics)."""
    task = record.get("task")
    return {
        "id": record["id"],
        "name": record["name"],
        "description": record["description"],
        "status": status_code(record),
        "status_name": record["status"],
        "triples": record["triples"],
        "entities": record["entities"],
        "relations": record["relations"],
        "algorithm": record["algorithm"],
        "metrics": record.get("metrics"),
        "task": task and {"id": task["job_id"], "operation": task["op"]},
    }


def delete(service: Service, dataset_id: int) -> None:
    record = get(service, dataset_id)
    task = record.get("task")
    if task is not None:
        with contextlib.suppress(errors.ConveyorError):  # already finished or gone
            service.cancel(task["job_id"])
    service.storage.delete_prefix(f"kge/datasets/{dataset_id}/")
    service.store.delete_record(DATASETS, _key(dataset_id))


def _guard(record: dict[str, Any], allowed: tuple[str, ...], what: str, ignore: bool) -> None:
    task = record.get("task")
    if task is not None:
        raise Conflict(
            f"dataset {record['id']} is busy with task {task['job_id']} ({task['op']}); wait for"
            " it or cancel it with DELETE /kge/tasks/{id}"
        )
    if not ignore and record["status"] not in allowed:
        raise Conflict(
            f"cannot {what}: dataset {record['id']} is {record['status']}"
            f" (needs {' or '.join(allowed)}; ?ignore_status=true overrides)"
        )


def _read_triples(service: Service, dataset_id: int) -> str:
    try:
        return b"".join(service.storage.read(triples_key(dataset_id))).decode("utf-8")
    except errors.ConveyorError:
        return ""


def add_triples(
    service: Service, dataset_id: int, triples: list[Triple], ignore: bool = False
) -> dict[str, Any]:
    record = get(service, dataset_id)
    _guard(record, (UNTRAINED,), "add triples", ignore)
    return _append(service, record, triples)


def _append(service: Service, record: dict[str, Any], triples: list[Triple]) -> dict[str, Any]:
    known = parse_tsv(_read_triples(service, record["id"]))
    merged = list(dict.fromkeys([*known, *triples]))  # a triple is a fact: no duplicates
    service.storage.write(triples_key(record["id"]), [to_tsv(merged).encode()])
    record["triples"] = len(merged)
    record["entities"] = len({t[0] for t in merged} | {t[2] for t in merged})
    record["relations"] = len({t[1] for t in merged})
    save(service, record)
    return record


# -- tasks -----------------------------------------------------------------------------------


def _ensure_kinds(service: Service) -> None:
    """Register the kge kinds from this process, so submits never wait for a worker."""
    known = service.kinds()
    if all(k in known for k in KINDS):
        return
    import conveyor.kinds.kge  # noqa: F401 - declares the kinds

    service.store.register_kinds([registry.get(k).info() for k in KINDS])
    service.kinds(refresh=True)


def _submit(
    service: Service, record: dict[str, Any], kind: str, op: str, inp: dict[str, Any],
    files: dict[str, Any],
) -> Job:  # fmt: skip
    """Stage `files` (name -> byte chunks), submit the job, and mark the dataset busy."""
    _ensure_kinds(service)
    staged = {name: staging.stage(service, name, chunks, None) for name, chunks in files.items()}
    new = NewJob(kind=kind, input={**inp, "dataset": record["id"]}, tags=[f"kge:{record['id']}"])
    (job,), _ = staging.submit_with_files(service, [new], [staged])
    record["task"] = {"job_id": job.id, "op": op}
    save(service, record)
    return job


def train(service: Service, dataset_id: int, algorithm_id: int, ignore: bool = False) -> Job:
    record = get(service, dataset_id)
    chosen = algorithm(service, algorithm_id)
    _guard(record, (UNTRAINED,), "train", ignore)
    if record["triples"] == 0:
        raise Conflict(f"dataset {dataset_id} has no triples to train on")
    params = m.Algorithm.model_validate({k: v for k, v in chosen.items() if k != "id"})
    record.update(status=UNTRAINED, model_job=None, index_job=None, metrics=None,
                  autocomplete_job=None)  # fmt: skip
    record["algorithm"] = chosen
    data = service.storage.read(triples_key(dataset_id))
    return _submit(service, record, "kge.train", "train", params.model_dump(),
                   {m.TRIPLES_FILE: data})  # fmt: skip


def build_index(
    service: Service, dataset_id: int, params: m.IndexInput, ignore: bool = False
) -> Job:
    record = get(service, dataset_id)
    _guard(record, (TRAINED,), "build an index", ignore)
    if record["model_job"] is None:
        raise Conflict(f"dataset {dataset_id} has no trained model to index")
    vectors = service.storage.read(job_key(record["model_job"], "out", m.ENTITY_VECTORS))
    return _submit(service, record, "kge.index", "index",
                   params.model_dump(exclude={"dataset"}), {m.ENTITY_VECTORS: vectors})  # fmt: skip


def build_autocomplete(
    service: Service, dataset_id: int, langs: list[str], ignore: bool = False
) -> Job:
    """A `kge.autocomplete` job: the label search table of the trained entities."""
    record = get(service, dataset_id)
    _guard(record, (TRAINED, INDEXED), "build the autocomplete index", ignore)
    if record["model_job"] is None:
        raise Conflict(f"dataset {dataset_id} has no trained model to index")
    entities = service.storage.read(job_key(record["model_job"], "out", m.ENTITIES_FILE))
    found = [json.dumps(labels(service, dataset_id)).encode()]
    files = {m.ENTITIES_FILE: entities, m.LABELS_FILE: found}
    return _submit(service, record, "kge.autocomplete", "autocomplete", {"langs": langs}, files)


def start_import(
    service: Service, dataset_id: int, data: bytes, fmt: str, ignore: bool = False
) -> Job:
    record = get(service, dataset_id)
    _guard(record, (UNTRAINED,), "import triples", ignore)
    return _submit(service, record, "kge.import", "import",
                   {"format": fmt, "file": "upload"}, {"upload": [data]})  # fmt: skip


def start_sparql_import(
    service: Service, dataset_id: int, source: m.SparqlSource, ignore: bool = False
) -> Job:
    """A `kge.import` job reading `source`; an endpoint the SSRF guard refuses is refused here
    (422), before anything is queued, and again by the worker before every request."""
    CallbackPolicy.from_env().check(source.endpoint, what="SPARQL endpoint")
    record = get(service, dataset_id)
    _guard(record, (UNTRAINED,), "import triples", ignore)
    return _submit(service, record, "kge.import", "import", {"sparql": source.model_dump()}, {})


def task_job(service: Service, task_id: str) -> Job:
    """The kge job behind a task id (404 for other kinds and unknown ids)."""
    try:
        job = service.get(task_id)
    except (errors.JobNotFoundError, errors.FileError, errors.InvalidInputError):
        raise NotFound(f"task {task_id} not found") from None
    if job.kind not in KINDS:
        raise NotFound(f"task {task_id} not found")
    return job


def refresh(service: Service, record: dict[str, Any]) -> dict[str, Any]:
    """Apply the outcome of the dataset's task once its job is final."""
    task = record.get("task")
    if task is None:
        return record
    try:
        job = service.get(task["job_id"])
    except errors.JobNotFoundError:
        job = None
    if job is not None and not job.state.is_final:
        return record
    ok = job is not None and job.state is JobState.SUCCEEDED
    record["task"] = None
    if ok and job is not None and task["op"] == "train":
        record.update(status=TRAINED, model_job=job.id, index_job=None)
        record["metrics"] = (job.result or {}).get("metrics")
    elif ok and job is not None and task["op"] == "index":
        record.update(status=INDEXED, index_job=job.id)
    elif ok and job is not None and task["op"] == "autocomplete":
        record["autocomplete_job"] = job.id
    elif ok and job is not None and task["op"] == "import" and job.id not in record["imported"]:
        record["imported"].append(job.id)
        _merge_labels(service, record["id"], job.id)
        data = b"".join(service.storage.read(job_key(job.id, "out", m.TRIPLES_FILE)))
        return _append(service, record, parse_tsv(data.decode("utf-8")))
    elif task["op"] == "train":  # failed or cancelled: no partial model is ever served
        record.update(status=UNTRAINED, model_job=None, index_job=None, metrics=None,
                      autocomplete_job=None)  # fmt: skip
    save(service, record)
    return record
