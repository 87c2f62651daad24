"""The BlobStorage contract, run against the local directory and S3 (a real moto_server)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor import errors
from conveyor.storage import BlobStorage, job_key, job_prefix
from conveyor.storage.base import MissingFileError, TooLargeError
from conveyor.storage.fs import FileStorage
from tests.servers.moto import Bucket, moto_server, s3_bucket  # noqa: F401

JOB = "0190f3c2-0000-7000-8000-00000000abcd"
OTHER = "0190f3c2-0000-7000-8000-00000000ffff"
MB = 1 << 20


@pytest.fixture(params=["fs", "s3"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def storage(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> BlobStorage:
    if kind == "fs":
        return FileStorage(tmp_path / "files")
    from conveyor.storage.s3 import S3Storage

    bucket: Bucket = request.getfixturevalue("s3_bucket")
    return S3Storage(bucket.name, "conveyor/test", settings=bucket.settings(part_size=5 * MB))


def body(total: int) -> bytes:
    """Deterministic pseudo-random bytes."""
    seed = hashlib.sha256(b"conveyor").digest()
    out = bytearray()
    while len(out) < total:
        seed = hashlib.sha256(seed).digest()
        out += seed * 64
    return bytes(out[:total])


def pieces(data: bytes, size: int = 777_777) -> Iterator[bytes]:
    """`data` in odd-sized chunks."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def chunks(total: int, size: int = 777_777) -> Iterator[bytes]:
    return pieces(body(total), size)


def test_write_read_stat(storage: BlobStorage) -> None:
    key = job_key(JOB, "out", "result.bin")
    data = body(3 * MB + 5)
    assert storage.write(key, pieces(data)) == len(data)
    assert b"".join(storage.read(key)) == data
    info = storage.stat(key)
    assert (info.key, info.name, info.size) == (key, "result.bin", len(data))
    assert info.modified > 0


def test_overwrite_replaces(storage: BlobStorage) -> None:
    key = job_key(JOB, "in", "a.txt")
    storage.write(key, [b"first version"])
    storage.write(key, [b"second"])
    assert b"".join(storage.read(key)) == b"second"


def test_empty_blob(storage: BlobStorage) -> None:
    key = job_key(JOB, "out", "empty")
    assert storage.write(key, []) == 0
    assert b"".join(storage.read(key)) == b""
    assert storage.stat(key).size == 0


def test_multipart_sized_stream(storage: BlobStorage) -> None:
    """Over two S3 parts, with chunk boundaries not aligned to parts."""
    key = job_key(JOB, "out", "big.bin")
    data = body(11 * MB + 123)
    assert storage.write(key, pieces(data, size=3 * MB + 1)) == len(data)
    assert hashlib.sha256(b"".join(storage.read(key))).digest() == hashlib.sha256(data).digest()


@pytest.mark.parametrize(("start", "end"), [(0, 10), (5, 6), (100, None), (0, None), (7, 7)])
def test_range_reads(storage: BlobStorage, start: int, end: int | None) -> None:
    key = job_key(JOB, "out", "range.bin")
    data = bytes(range(256)) * 4
    storage.write(key, [data])
    assert b"".join(storage.read(key, start, end)) == data[start:end]


def test_range_past_the_end_is_empty(storage: BlobStorage) -> None:
    key = job_key(JOB, "out", "short")
    storage.write(key, [b"abc"])
    assert b"".join(storage.read(key, 10)) == b""


def test_missing_blob(storage: BlobStorage, tmp_path: Path) -> None:
    key = job_key(JOB, "out", "nope")
    with pytest.raises(MissingFileError):
        storage.read(key)
    with pytest.raises(MissingFileError):
        storage.stat(key)
    with pytest.raises(MissingFileError):
        storage.download(key, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_too_large_stores_nothing(storage: BlobStorage) -> None:
    key = job_key(JOB, "in", "huge")
    with pytest.raises(TooLargeError) as caught:
        storage.write(key, chunks(12 * MB), max_bytes=7 * MB)
    assert caught.value.status == 413
    with pytest.raises(MissingFileError):
        storage.stat(key)
    assert storage.list(job_prefix(JOB)) == []


def test_failed_stream_stores_nothing(storage: BlobStorage) -> None:
    """A stream that breaks half-way leaves no partial object (the upload is atomic)."""
    key = job_key(JOB, "in", "broken")

    def breaking() -> Iterator[bytes]:
        yield from chunks(6 * MB)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        storage.write(key, breaking())
    with pytest.raises(MissingFileError):
        storage.stat(key)


def test_list_and_delete_prefix(storage: BlobStorage) -> None:
    for name in ("b.txt", "a.txt"):
        storage.write(job_key(JOB, "out", name), [name.encode()])
    storage.write(job_key(JOB, "in", "input.json"), [b"{}"])
    storage.write(job_key(OTHER, "out", "keep.txt"), [b"keep"])
    listed = storage.list(job_prefix(JOB))
    assert [b.key for b in listed] == [
        f"jobs/{JOB}/in/input.json",
        f"jobs/{JOB}/out/a.txt",
        f"jobs/{JOB}/out/b.txt",
    ]
    assert [b.size for b in listed] == [2, 5, 5]
    assert storage.list(job_prefix("0190f3c2-0000-7000-8000-000000000000")) == []
    assert storage.delete_prefix(job_prefix(JOB)) == 3
    assert storage.list(job_prefix(JOB)) == []
    assert storage.delete_prefix(job_prefix(JOB)) == 0
    assert b"".join(storage.read(job_key(OTHER, "out", "keep.txt"))) == b"keep"


def test_list_prefix_is_a_directory_not_a_string_prefix(storage: BlobStorage) -> None:
    """`jobs/1/` must not list `jobs/12/...`."""
    storage.write(job_key("12", "out", "x"), [b"x"])
    assert storage.list(job_prefix("1")) == []
    assert storage.delete_prefix(job_prefix("1")) == 0


def test_upload_and_download_files(storage: BlobStorage, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    data = body(6 * MB + 1)
    src.write_bytes(data)
    key = job_key(JOB, "in", "src.bin")
    assert storage.upload(key, src) == len(data)
    dest = tmp_path / "dest.bin"
    storage.download(key, dest)
    assert dest.read_bytes() == data


@pytest.mark.parametrize(
    "bad", ["", "jobs/../etc/passwd", "jobs//x", "/abs", "jobs/./x", "a\\b", "jobs/x/.."]
)
def test_keys_cannot_escape(storage: BlobStorage, bad: str) -> None:
    with pytest.raises(errors.FileError):
        storage.write(bad, [b"x"])
    with pytest.raises(errors.FileError):
        storage.read(bad)


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "", "x" * 201, "a\0b"])
def test_job_key_rejects_unsafe_names(name: str) -> None:
    with pytest.raises(errors.FileError):
        job_key(JOB, "out", name)


# -- presigned URLs (S3 only: the local directory is streamed by the API instead) -------------


def test_presigned_put_then_get(kind: str, storage: BlobStorage) -> None:
    if kind != "s3":
        pytest.skip("local storage has no presigned URLs; the API streams its files")
    from conveyor.storage.s3 import S3Storage

    assert isinstance(storage, S3Storage)
    key = job_key(JOB, "in", "upload.bin")
    data = body(MB + 3)
    put = httpx.put(storage.presign(key, "PUT", 60), content=data, timeout=30)
    assert put.status_code == 200, put.text
    assert b"".join(storage.read(key)) == data
    got = httpx.get(storage.presign(key, "GET", 60), timeout=30)
    assert got.status_code == 200
    assert got.content == data
    assert "X-Amz-Signature=" in storage.presign(key, "GET", 60)
    with pytest.raises(errors.InvalidInputError):
        storage.presign(key, "DELETE", 60)  # type: ignore[arg-type]


def test_s3_url_and_prefix(s3_bucket: Bucket) -> None:  # noqa: F811
    from conveyor.storage.s3 import S3Storage

    one = S3Storage.from_url(f"s3://{s3_bucket.name}/tenant-a/", settings=s3_bucket.settings())
    two = S3Storage.from_url(f"s3://{s3_bucket.name}/tenant-b", settings=s3_bucket.settings())
    key = job_key(JOB, "out", "x.txt")
    one.write(key, [b"a"])
    assert one.list(job_prefix(JOB))[0].key == key
    assert two.list(job_prefix(JOB)) == []
    objects = s3_bucket.client().list_objects_v2(Bucket=s3_bucket.name)["Contents"]
    assert [o["Key"] for o in objects] == [f"tenant-a/{key}"]


def test_s3_missing_bucket_is_a_configuration_error(moto_server: str) -> None:  # noqa: F811
    from conveyor.storage.s3 import S3Storage

    bucket = Bucket(moto_server, "no-such-bucket")
    storage = S3Storage(bucket.name, settings=bucket.settings())
    with pytest.raises(errors.ConfigurationError, match="does not exist"):
        storage.write(job_key(JOB, "out", "x"), [b"x"])


# -- 200 MB with bounded memory: measured in a fresh process -----------------------------------

MEMORY_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, sys, threading, time
    from pathlib import Path
    from conveyor.storage import open_storage
    from conveyor.storage.fs import FileStorage

    kind, target, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if kind == "fs":
        storage = FileStorage(target)
    else:
        from conveyor.storage.s3 import S3Settings, S3Storage
        storage = S3Storage.from_url(target, settings=S3Settings(**json.loads(sys.argv[4])))

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)

    peak = [0.0]
    def sample():  # the current RSS, sampled: the peak of ru_maxrss may predate the upload
        while True:
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.005)
    threading.Thread(target=sample, daemon=True).start()

    def stream():
        block = hashlib.sha256(b"x").digest() * (1 << 15)  # 1 MiB
        for i in range(total // len(block)):
            yield block[i % 32:] + block[:i % 32]

    key = "jobs/0190f3c2-0000-7000-8000-00000000abcd/out/big.bin"
    storage.write(key, [])  # warm up the client before taking the baseline
    before = rss_mb()
    peak[0] = before
    written = storage.write(key, stream())
    after_write = peak[0]
    digest = hashlib.sha256()
    for chunk in storage.read(key):
        digest.update(chunk)
    expected = hashlib.sha256()
    for chunk in stream():
        expected.update(chunk)
    print(json.dumps({"written": written, "before_mb": before, "after_write_mb": after_write,
                      "after_read_mb": peak[0], "same": digest.digest() == expected.digest()}))
    """
)


def test_200mb_upload_and_download_in_bounded_memory(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    total = 200 * MB
    args: list[str]
    if kind == "fs":
        args = ["fs", str(tmp_path / "files"), str(total)]
    else:
        bucket: Bucket = request.getfixturevalue("s3_bucket")
        settings = bucket.settings().model_dump(exclude_none=True)
        args = ["s3", f"s3://{bucket.name}/big", str(total), json.dumps(settings)]
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\n{kind}: 200 MB peak RSS {report}")
    assert report["written"] == total
    assert report["same"]
    # One 8 MiB part buffer (+ its bytes copy) and 1 MiB read chunks: far below the 200 MB file.
    assert report["after_write_mb"] - report["before_mb"] < 48
    assert report["after_read_mb"] - report["before_mb"] < 48
