"""A real `conveyor api` on a free port, and google-api-python-client built from its
discovery document (as the CS Unplugged clients did)."""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from googleapiclient.discovery import build
from pypdf import PdfReader

from tests.api.conftest import ApiServer, running_api

#: Small, so that a render of a few pages goes out as result#document and a long one as a link.
MAX_DOCUMENT_BYTES = 60_000


@pytest.fixture(scope="package")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with running_api(
        tmp_path_factory.mktemp("tq"),
        env_extra={"CONVEYOR_TASKQUEUE_MAX_DOCUMENT_BYTES": str(MAX_DOCUMENT_BYTES)},
    ) as server:
        yield server


@pytest.fixture
def tq(api: ApiServer) -> Any:
    """The `taskqueue v1beta2` service object of google-api-python-client.

    One per test: httplib2 keeps its connection open, and the server closes idle ones.
    """
    return build(
        "taskqueue", "v1beta2", discoveryServiceUrl=f"{api.url}/api/{{api}}/{{apiVersion}}",
        cache_discovery=False,
    )  # fmt: skip


@pytest.fixture
def queue() -> str:
    """A fresh task queue name per test, so tests never see each other's tasks."""
    return f"q-{uuid.uuid4().hex[:12]}"


def encode(payload: Any) -> str:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return base64.b64encode(raw).decode("ascii")


def decode(task: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(task["payloadBase64"]))


def insert(tq: Any, queue: str, payload: Any, tag: str = "", **extra: Any) -> dict[str, Any]:
    body = {"queueName": queue, "payloadBase64": encode(payload), "tag": tag, **extra}
    task: dict[str, Any] = tq.tasks().insert(project="b~proj", taskqueue=queue, body=body).execute()
    return task


def lease(tq: Any, queue: str, n: int = 100, secs: float = 60, **kw: Any) -> list[dict[str, Any]]:
    answer = (
        tq.tasks()
        .lease(project="b~proj", taskqueue=queue, numTasks=n, leaseSecs=secs, **kw)
        .execute()
    )
    return list(answer.get("items", []))


def render_task(view: str, paper: str = "a4", copies: int = 1, **options: Any) -> dict[str, Any]:
    return {"kind": "task#render", "resource_slug": view.replace("_", "-"),
            "resource_name": view.replace("_", " ").title(), "resource_view": view,
            "url": f"https://example.org/resources/{view}", "header_text": f"Room {paper} 7",
            "copies": copies, "paper_size": paper, **options}  # fmt: skip


PAGE_POINTS = {"a4": (595, 842), "letter": (612, 792)}


def check_pdf(pdf: bytes, pages: int, paper: str, header: str) -> None:
    """A real PDF: the page count, the paper size (to the point) and the header on each page."""
    assert pdf.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == pages
    for page in reader.pages:
        box = page.mediabox
        assert (round(float(box.width)), round(float(box.height))) == PAGE_POINTS[paper]
        assert header in page.extract_text()
