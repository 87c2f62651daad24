"""S17: upload limits, lying lengths, multipart abuse and object-key traversal.

A real `conveyor api` with a 1 MiB upload limit. Pass: a streamed oversize body gets 413 before
the client could push much more than the limit; a lying `Content-Length` never stores more than
it declared and never answers 5xx; 10,000 multipart fields on the allocation compat route are
refused with bounded RSS; traversal names (raw, percent-encoded, double-encoded, backslashes,
NUL, full-width dots) and a symlink planted in the storage root leave 0 files outside the root;
downloads are attachments with `nosniff`.

Existing tests: tests/api/test_api_files.py (413 by Content-Length and chunked at 1,000 bytes,
six bad names, multipart refused with 415, 50 MB upload with bounded memory).
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ApiServer, start_api
from tests.integration.harness import stop
from tests.reliability.security_results import record

LIMIT = 1 << 20
MIB = 1 << 20
TRAVERSAL = [
    "../x", "..%2fx", "..%2Fx", "%2e%2e/x", "%2e%2e%2fx", "%252e%252e%252fx", "/etc/x",
    "%2fetc%2fx", "a\\..\\x", "a%5c..%5cx", "..\\x", "a%00b", "a/%00b", "x%00.txt",
    "%EF%BC%8E%EF%BC%8E%EF%BC%8Fx", "%EF%BC%8E%EF%BC%8Ex", "..", ".", "%2e", "a/../../x",
    "a/b", "..%c0%afx", "%c0%ae%c0%ae/x", "x" * 300, "~/.ssh/x", "%0d%0aX-Injected:1",
]  # fmt: skip


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    server = start_api(tmp_path_factory.mktemp("s17") / "home",
                       env_extra={"CONVEYOR_MAX_UPLOAD_BYTES": str(LIMIT)})  # fmt: skip
    try:
        yield server
    finally:
        stop(server.process)


def _walk(top: Path, root: Path) -> set[str]:
    """Every file and link under `top` except those inside the storage root."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(top):
        for name in filenames + dirnames:
            path = Path(dirpath, name)
            if not path.is_relative_to(root):
                found.add(str(path))
    return found


def _raw(
    api: ApiServer, head: bytes, body: Iterator[bytes], deadline_s: float = 30
) -> tuple[int, bytes]:
    """Send a request head and stream `body`; stop when the server answers or hangs up.
    Returns (bytes of body the kernel accepted, the response bytes)."""
    port = int(api.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=deadline_s)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sock.sendall(head)
    sock.setblocking(False)
    sent, answer = 0, b""
    end = time.monotonic() + deadline_s
    try:
        for chunk in body:
            view = memoryview(chunk)
            while view and time.monotonic() < end:
                try:
                    answer += sock.recv(65536)
                    if answer:
                        raise StopIteration
                except BlockingIOError:
                    pass
                try:
                    n = sock.send(view)
                    sent, view = sent + n, view[n:]
                except BlockingIOError:
                    select.select([sock], [sock], [], 0.05)  # until either side can move
    except (StopIteration, ConnectionError, BrokenPipeError):
        pass
    sock.setblocking(True)
    sock.settimeout(10)
    try:
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer:
                break
    except (ConnectionError, TimeoutError, OSError):
        pass
    sock.close()
    return sent, answer


def _job(http: httpx.Client) -> str:
    r = http.post("/v1/jobs", json={"kind": "noop", "delay_s": 3600})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_streamed_oversize_body_is_refused_early(api: ApiServer) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as http:
        job = _job(http)

    def chunked() -> Iterator[bytes]:
        block = b"z" * 65536
        for _ in range(64 * 16):  # up to 64 MiB
            yield b"10000\r\n" + block + b"\r\n"

    head = (f"PUT /v1/jobs/{job}/files/big.bin HTTP/1.1\r\nHost: x\r\n"
            "Transfer-Encoding: chunked\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()  # fmt: skip
    sent, answer = _raw(api, head, chunked())
    # what the client pushed includes what sits in kernel buffers: its own send buffer and the
    # server's receive buffer (initial size; it only grows while the server keeps reading)
    rmem_max = int(Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split()[1]) + 64 * 1024
    status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/") else b"none"
    ok = status == b"413" and sent <= LIMIT + MIB + rmem_max
    record("S17 streamed oversize", 1, int(not ok),
           f"1 MiB limit, chunked 64 MiB body: {status.decode()} after the client pushed "
           f"{sent / MIB:.1f} MiB (bound: limit + 1 MiB + kernel buffers "
           f"{rmem_max / MIB:.1f} MiB)")  # fmt: skip
    assert status == b"413", answer[:300]
    assert sent <= LIMIT + MIB + rmem_max, sent


def test_lying_content_length_stores_what_was_declared(api: ApiServer) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as http:
        job = _job(http)
        failures = []
        # small declared length, big body: the rest is not part of this request. uvicorn may
        # answer 400 for the garbage "next request" and drop the connection before the first
        # answer; either way no more than the declared 10 bytes may be stored, and no 5xx.
        head = (f"PUT /v1/jobs/{job}/files/small.bin HTTP/1.1\r\nHost: x\r\n"
                "Content-Type: application/octet-stream\r\n"
                "Content-Length: 10\r\n\r\n").encode()  # fmt: skip
        _, answer = _raw(api, head, iter([b"a" * (5 * MIB)]))
        small_status = answer[9:12].decode()
        if small_status not in ("201", "400"):
            failures.append(f"small length: {answer[:100]!r}")
        files = http.get(f"/v1/jobs/{job}/files").json()["files"]
        sizes = {f["name"]: f["size"] for f in files}
        if sizes.get("small.bin", 10) != 10 or (small_status == "201" and not sizes):
            failures.append(f"answered {small_status}, stored {sizes}")
        # big declared length, small body: refused by the declaration, before reading
        head = (f"PUT /v1/jobs/{job}/files/huge.bin HTTP/1.1\r\nHost: x\r\n"
                "Content-Type: application/octet-stream\r\n"
                f"Content-Length: {100 * MIB}\r\n\r\n").encode()  # fmt: skip
        _, answer = _raw(api, head, iter([b"b" * 1000]), deadline_s=10)
        if not answer.startswith(b"HTTP/1.1 413"):
            failures.append(f"big length: {answer[:100]!r}")
        assert api.process.poll() is None
    record("S17 lying Content-Length", 2, len(failures),
           f"Content-Length 10 with a 5 MiB body: {small_status}, stored {sizes or 'nothing'}; "
           "Content-Length 100 MiB with 1,000 bytes: 413 before reading")  # fmt: skip
    assert not failures, failures


def test_ten_thousand_multipart_fields_are_refused_with_bounded_memory(api: ApiServer) -> None:
    boundary = "s17boundary"
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nv\r\n"
             for i in range(10_000)]  # fmt: skip
    files = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"pref\"; "
             f"filename=\"p{i}.csv\"\r\nContent-Type: text/csv\r\n\r\na,b\r\n"
             for i in range(2000)]  # fmt: skip
    failures = []
    before = api.rss_kb()
    peak = before
    with httpx.Client(base_url=api.url, timeout=60) as http:
        for what, body in (("10,000 fields", parts), ("2,000 file parts", files)):
            data = ("".join(body) + f"--{boundary}--\r\n").encode()
            ctype = f"multipart/form-data; boundary={boundary}"
            r = http.post("/allocation/allocate_file/", content=data,
                          headers={"Content-Type": ctype})  # fmt: skip
            peak = max(peak, api.rss_kb())
            if r.status_code not in (400, 413, 422):
                failures.append(f"{what}: {r.status_code} {r.text[:120]}")
    growth_mib = (peak - before) / 1024
    if growth_mib > 50:
        failures.append(f"RSS grew {growth_mib:.0f} MiB")
    record("S17 multipart abuse", 2, len(failures),
           f"/allocation/allocate_file/ with 10,000 fields and 2,000 file parts: refused, "
           f"RSS growth {growth_mib:.1f} MiB (bound 50)")  # fmt: skip
    assert not failures, failures


def test_traversal_names_and_planted_symlinks_stay_inside_the_root(api: ApiServer) -> None:
    root = api.home / "files"
    top = api.home.parent
    outside = top / "outside"
    outside.mkdir(exist_ok=True)
    failures = []
    with httpx.Client(base_url=api.url, timeout=30) as http:
        job = _job(http)
        http.put(f"/v1/jobs/{job}/files/seed.txt", content=b"seed")  # creates the job's folder
        planted_job = _job(http)
        (root / "jobs" / planted_job).mkdir(parents=True, exist_ok=True)
        (root / "jobs" / planted_job / "in").symlink_to(outside, target_is_directory=True)
        before = _walk(top, root)
        cases = 0
        for name in TRAVERSAL:
            for path in (f"/v1/jobs/{job}/files/{name}", f"/v1/uploads/{name}"):
                cases += 1
                r = http.put(path, content=b"pwned")
                if r.status_code < 400 or r.status_code >= 500:
                    failures.append(f"PUT {path}: {r.status_code} {r.text[:100]}")
        for name in ("ok.txt", "a.bin"):
            cases += 1
            r = http.put(f"/v1/jobs/{planted_job}/files/{name}", content=b"pwned")
            if r.status_code < 400 or r.status_code >= 500:
                failures.append(f"through the symlink {name}: {r.status_code} {r.text[:100]}")
            cases += 1
            g = http.get(f"/v1/jobs/{planted_job}/files/{name}", params={"direction": "in"})
            if g.status_code < 400 or g.status_code >= 500:
                failures.append(f"read through the symlink {name}: {g.status_code}")
        after = _walk(top, root)
    created = sorted(after - before) + [str(p) for p in outside.iterdir()]
    record("S17 key traversal", cases, len(failures) + len(created),
           f"{len(TRAVERSAL)} names x (job file, staged upload) + a symlink planted in the "
           f"root: {len(created)} files outside the root, 0 2xx/5xx expected")  # fmt: skip
    assert not failures, "\n".join(failures)
    assert not created, created


def test_downloads_are_attachments_and_not_sniffed(api: ApiServer) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as http:
        job = _job(http)
        page = b"<html><script>alert(1)</script></html>"
        for name in ("x.html", "x.svg", "x.txt"):
            assert http.put(f"/v1/jobs/{job}/files/{name}", content=page).status_code == 201
        failures = []
        for name in ("x.html", "x.svg", "x.txt"):
            r = http.get(f"/v1/jobs/{job}/files/{name}", params={"direction": "in"})
            if not r.headers.get("content-disposition", "").startswith("attachment"):
                failures.append(f"{name}: disposition {r.headers.get('content-disposition')}")
            if r.headers.get("x-content-type-options") != "nosniff":
                failures.append(f"{name}: no nosniff")
            if "html" in r.headers.get("content-type", "") or "svg" in r.headers.get(
                "content-type", ""
            ):
                failures.append(f"{name}: served as {r.headers['content-type']}")
    record("S17 download headers", 3, len(failures),
           "html/svg/txt inputs with <script>: attachment, nosniff, never text/html")  # fmt: skip
    assert not failures, failures
