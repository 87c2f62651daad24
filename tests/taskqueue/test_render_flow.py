"""Render tasks in through the Task Queue, rendered by a conveyor worker, results out."""

from __future__ import annotations

import base64
from typing import Any

import httpx

from tests.api.conftest import ApiServer
from tests.taskqueue.conftest import check_pdf, decode, insert, lease, render_task

BAD_INPUTS: dict[str, tuple[Any, str]] = {
    "unknown view": (render_task("dragon_cards"), "resource_view"),
    "option value": (render_task("binary_cards", display_numbers="yes"), "display_numbers"),
    "not json": (b"\x00 definitely not JSON", "not JSON"),
    "no paper size": ({k: v for k, v in render_task("modulo_clock").items()
                       if k != "paper_size"}, "paper_size"),
}  # fmt: skip


def consume_results(tq: Any, queue: str) -> dict[str, dict[str, Any]]:
    """Lease every `result` task like the original consumers did; delete it; by task id."""
    results = {}
    for task in lease(tq, queue, n=100, groupByTag=True, tag="result"):
        payload = decode(task)
        results[payload["task_id"]] = payload
        tq.tasks().delete(project="b~proj", taskqueue=queue, task=task["id"]).execute()
    return results


def test_render_through_taskqueue_and_a_conveyor_worker(
    tq: Any, queue: str, api: ApiServer
) -> None:
    cards = insert(tq, queue, render_task("binary_cards", display_numbers=False,
                                          black_back=True), tag="task")  # fmt: skip
    network = insert(tq, queue, render_task("sorting_network", "letter"), tag="task")
    big = insert(tq, queue, render_task("modulo_clock", copies=10, modulo=12), tag="task")
    bad = {name: insert(tq, queue, payload, tag="task") for name, (payload, _) in
           BAD_INPUTS.items()}  # fmt: skip
    listed = tq.tasks().list(project="proj", taskqueue=queue).execute()["items"]
    assert len(listed) == 7
    assert httpx.get(f"{api.url}/v1/jobs/{cards['id']}").json()["kind"] == "render.taskqueue"

    api.run_worker("-i", "conveyor.kinds.render", "-q", f"proj.{queue}.render", timeout=120)
    results = consume_results(tq, queue)
    assert len(results) == 7

    small = results[cards["id"]]
    assert (small["kind"], small["success"]) == ("result#document", True)
    assert small["filename"] == "Binary Cards (without numbers - with black back - a4).pdf"
    check_pdf(base64.b64decode(small["document"]), pages=6, paper="a4", header="Room a4 7")

    letter = results[network["id"]]
    assert letter["kind"] == "result#document"
    check_pdf(base64.b64decode(letter["document"]), pages=1, paper="letter",
              header="Room letter 7")  # fmt: skip

    link = results[big["id"]]
    assert (link["kind"], link["success"]) == ("result#link", True)
    assert set(link) >= {"kind", "success", "url"}
    downloaded = httpx.get(link["url"])
    assert downloaded.status_code == 200
    check_pdf(downloaded.content, pages=10, paper="a4", header="Room a4 7")
    job = httpx.get(f"{api.url}/v1/jobs/{big['id']}").json()
    assert job["state"] == "succeeded"
    assert job["result"]["bytes"] == len(downloaded.content)

    for name, (_, named) in BAD_INPUTS.items():
        failure = results[bad[name]["id"]]
        assert failure["kind"] == "result#document"
        assert (failure["success"], failure["filename"], failure["document"]) == (False, None, None)
        assert named in failure["error"], (name, failure["error"])
        failed = httpx.get(f"{api.url}/v1/jobs/{bad[name]['id']}").json()
        assert failed["state"] == "failed"
        assert named in failed["error"]["message"]

    assert consume_results(tq, queue) == {}  # each reply is posted once
    assert tq.tasks().list(project="proj", taskqueue=queue).execute()["items"] == []


def test_render_kind_through_v1(api: ApiServer) -> None:
    """The same renderer as a plain conveyor kind: input validated at submit, PDF as output."""
    api.run_worker("-i", "conveyor.kinds.render", "-q", "render")  # registers the kinds
    with httpx.Client(base_url=api.url, timeout=30) as http:
        bad = http.post("/v1/jobs", json={"kind": "render", "input": {
            **render_task("parity_cards"), "paper_size": "a3"}})  # fmt: skip
        assert bad.status_code == 422, bad.text
        created = http.post("/v1/jobs", json={"kind": "render", "input": render_task(
            "parity_cards", "letter", copies=2, back_colour="green")})  # fmt: skip
        assert created.status_code in (200, 201, 202), created.text
        job_id = created.json()["id"]
        api.run_worker("-i", "conveyor.kinds.render", "-q", "render", timeout=120)
        job = http.get(f"/v1/jobs/{job_id}").json()
        assert job["state"] == "succeeded", job
        assert job["result"]["pages"] == 4
        pdf = http.get(f"/v1/jobs/{job_id}/files/{job['result']['file']}").content
        check_pdf(pdf, pages=4, paper="letter", header="Room letter 7")
