from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import errors
from conveyor.kinds.registry import import_kinds
from conveyor.models import JobFilter, NewJob
from conveyor.service import Service
from conveyor.storage.fs import FileStorage
from conveyor.store import open_store


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    store = open_store("memory://")
    store.register_kinds(import_kinds(["conveyor.kinds.demo"]).infos())
    yield Service(store, FileStorage(tmp_path))
    store.close()


def test_submit_applies_kind_defaults(service: Service) -> None:
    job = service.submit(NewJob(kind="demo.fail"))
    assert job.max_attempts == 3
    assert job.backoff_s == 0.5
    assert job.queue == "default"


def test_validation_does_not_rewrite_input(service: Service) -> None:
    given = {"to": 2}
    job = service.submit(NewJob(kind="demo.count", input=given))
    assert given == {"to": 2}
    assert job.input == {"to": 2}


def test_invalid_input_lists_every_field(service: Service) -> None:
    with pytest.raises(errors.InvalidInputError) as caught:
        service.submit(NewJob(kind="demo.count", input={"to": "x", "delay": -1}))
    locs = sorted(".".join(map(str, p["loc"])) for p in caught.value.details["errors"])
    assert locs == ["input.delay", "input.to"]


def test_batch_errors_name_the_job(service: Service) -> None:
    jobs = [NewJob(kind="noop"), NewJob(kind="demo.count", input={"to": 0})]
    with pytest.raises(errors.InvalidInputError) as caught:
        service.submit_many(jobs)
    assert caught.value.details["errors"][0]["loc"][:2] == ["jobs", 1]
    assert service.list_jobs(JobFilter()).jobs == []


def test_unknown_kind_names_the_known_ones(service: Service) -> None:
    with pytest.raises(errors.KindNotFoundError, match=r"demo\.count"):
        service.submit(NewJob(kind="nope"))
