"""Files through a real uvicorn: staged and direct uploads, download, Range, limits, names."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ApiServer, running_api
from tests.api.test_api_jobs import problem

MB = 1 << 20


def pattern(size: int) -> Iterator[bytes]:
    block = os.urandom(MB)
    sent = 0
    while sent < size:
        chunk = block[: min(MB, size - sent)]
        sent += len(chunk)
        yield chunk


def test_upload_download_50mb_with_bounded_memory(api: ApiServer, http: httpx.Client) -> None:
    job = http.post("/v1/jobs", json={"kind": "noop", "delay_s": 3600}).json()
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        for chunk in pattern(50 * MB):
            digest.update(chunk)
            yield chunk

    before = api.rss_kb()
    r = http.put(f"/v1/jobs/{job['id']}/files/big.bin", content=body())
    assert r.status_code == 201, r.text
    assert r.json() == {"name": "big.bin", "direction": "in", "size": 50 * MB}
    got = hashlib.sha256()
    with http.stream("GET", f"/v1/jobs/{job['id']}/files/big.bin?direction=in") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-disposition"] == 'attachment; filename="big.bin"'
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["content-length"] == str(50 * MB)
        for chunk in resp.iter_bytes():
            got.update(chunk)
    growth_mb = (api.rss_kb() - before) / 1024
    assert got.hexdigest() == digest.hexdigest()
    assert growth_mb < 25, f"server RSS grew {growth_mb:.1f} MB for a 50 MB round trip"


def test_range_requests(http: httpx.Client) -> None:
    job = http.post("/v1/jobs", json={"kind": "noop", "delay_s": 3600}).json()
    url = f"/v1/jobs/{job['id']}/files/r.txt"
    assert http.put(url, content=b"0123456789").status_code == 201
    part = http.get(url, params={"direction": "in"}, headers={"Range": "bytes=2-5"})
    assert (part.status_code, part.content) == (206, b"2345")
    assert part.headers["content-range"] == "bytes 2-5/10"
    tail = http.get(url, params={"direction": "in"}, headers={"Range": "bytes=-3"})
    assert (tail.status_code, tail.content) == (206, b"789")
    body = problem(
        http.get(url, params={"direction": "in"}, headers={"Range": "bytes=20-"}),
        416,
        "range-not-satisfiable",
    )
    assert "outside" in body["detail"]
    listing = http.get(f"/v1/jobs/{job['id']}/files").json()["files"]
    assert listing == [{"name": "r.txt", "direction": "in", "size": 10}]


@pytest.mark.parametrize("name", ["%2E%2E", "..%2F..%2Fetc", ".hidden", "a%2Fb", "x" * 300, "a b"])
def test_bad_names_are_refused(http: httpx.Client, name: str) -> None:
    job = http.post("/v1/jobs", json={"kind": "noop", "delay_s": 3600}).json()
    r = http.put(f"/v1/jobs/{job['id']}/files/{name}", content=b"x")
    assert r.status_code in (400, 404), r.text
    assert r.headers["content-type"].startswith("application/problem+json")


def test_upload_rules(api: ApiServer, http: httpx.Client) -> None:
    problem(http.put("/v1/jobs/nope/files/a.txt", content=b"x"), 404, "job-not-found")
    job = http.post("/v1/jobs", json={"kind": "noop"}).json()
    api.run_worker()
    problem(http.put(f"/v1/jobs/{job['id']}/files/a.txt", content=b"x"), 409, "invalid-state")
    problem(http.get(f"/v1/jobs/{job['id']}/files/none.txt"), 404, "file-not-found")
    form = http.put(
        f"/v1/jobs/{job['id']}/files/a.txt", files={"f": ("a.txt", b"x")}
    )  # multipart, not a raw body
    problem(form, 415, "unsupported-media-type")
    problem(
        http.put(f"/v1/jobs/{job['id']}/files/a.txt?direction=out&token=stale", content=b"x"),
        409,
        "stale-lease",
    )


def test_staged_upload_is_in_place_before_the_job_runs(api: ApiServer, http: httpx.Client) -> None:
    staged = http.put("/v1/uploads/data.txt", content=b"hello").json()
    assert staged["size"] == 5
    r = http.post("/v1/jobs", json={"kind": "noop", "files": {"data.txt": staged["id"]}})
    assert r.status_code == 201, r.text
    job = r.json()
    got = http.get(f"/v1/jobs/{job['id']}/files/data.txt", params={"direction": "in"})
    assert got.content == b"hello"
    missing = http.post("/v1/jobs", json={"kind": "noop", "files": {"x.txt": "0" * 32}})
    problem(missing, 404, "file-not-found")
    bad = http.post("/v1/jobs", json={"kind": "noop", "files": {"x.txt": "../../etc"}})
    problem(bad, 422, "invalid-input")
    problem(http.post("/v1/jobs", json={"kind": "noop", "files": [1]}), 422, "invalid-request")


def test_size_limit_gives_413_before_reading(tmp_path: Path) -> None:
    small = {"CONVEYOR_MAX_UPLOAD_BYTES": "1000"}
    with (
        running_api(tmp_path / "small", env_extra=small) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        job = http.post("/v1/jobs", json={"kind": "noop", "delay_s": 3600}).json()
        url = f"/v1/jobs/{job['id']}/files/big.bin"
        problem(http.put(url, content=b"x" * 5000), 413, "file-too-large")

        def unsized() -> Iterator[bytes]:  # chunked: no Content-Length to refuse early
            yield from (b"y" * 600, b"y" * 600)

        problem(http.put(url, content=unsized()), 413, "file-too-large")
        assert http.get(f"/v1/jobs/{job['id']}/files").json()["files"] == []
