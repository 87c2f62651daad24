"""S3 storage behind the real API: CONVEYOR_STORAGE=s3://…, streamed files, presigned redirects."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from conveyor.models import KindInfo
from conveyor.storage import job_key, job_prefix, open_storage
from conveyor.storage.s3 import S3Storage
from conveyor.store import open_store
from tests.servers.http import serve_in_thread
from tests.servers.moto import Bucket, moto_server, s3_bucket  # noqa: F401


@pytest.fixture
def s3_env(s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> Bucket:  # noqa: F811
    monkeypatch.setenv("CONVEYOR_S3_ENDPOINT_URL", s3_bucket.endpoint)
    monkeypatch.setenv("CONVEYOR_S3_REGION", s3_bucket.region)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_bucket.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_bucket.secret_key)
    return s3_bucket


def test_open_storage_reads_the_environment(s3_env: Bucket) -> None:
    storage = open_storage(f"s3://{s3_env.name}/env-prefix")
    assert isinstance(storage, S3Storage)
    storage.write("jobs/0190f3c2/out/a.txt", [b"from env"])
    objects = s3_env.client().list_objects_v2(Bucket=s3_env.name)["Contents"]
    assert [o["Key"] for o in objects] == ["env-prefix/jobs/0190f3c2/out/a.txt"]


def test_files_through_the_api_with_presigned_redirect(s3_env: Bucket, tmp_path: Path) -> None:
    from conveyor.api.app import create_app
    from conveyor.settings import Settings

    settings = Settings(home=tmp_path, store=f"sqlite:///{tmp_path / 'c.db'}",
                        storage=f"s3://{s3_env.name}/api")  # fmt: skip
    store = open_store(settings.store_url)
    store.register_kinds([KindInfo(name="noop")])
    store.close()
    data = hashlib.sha256(b"x").digest() * 100_000  # 3.2 MB
    with serve_in_thread(create_app(settings)) as api, httpx.Client(base_url=api) as client:
        job = client.post("/v1/jobs", json={"kind": "noop", "delay_s": 3600}).json()
        put = client.put(f"/v1/jobs/{job['id']}/files/data.bin", content=data)
        assert put.status_code in (200, 201), put.text
        streamed = client.get(f"/v1/jobs/{job['id']}/files/data.bin", params={"direction": "in"})
        assert streamed.status_code == 200
        assert streamed.content == data
        redirect = client.get(f"/v1/jobs/{job['id']}/files/data.bin",
                              params={"direction": "in", "redirect": 1})  # fmt: skip
        assert redirect.status_code == 307
        location = redirect.headers["location"]
        assert location.startswith(s3_env.endpoint) and "X-Amz-Signature=" in location
        assert httpx.get(location).content == data  # straight from S3
        key = f"api/{job_key(job['id'], 'in', 'data.bin')}"
        assert s3_env.client().head_object(Bucket=s3_env.name, Key=key)["ContentLength"] == len(
            data
        )
        client.post(f"/v1/jobs/{job['id']}/cancel")
        deleted = client.delete(f"/v1/jobs/{job['id']}")
        assert deleted.status_code in (200, 204), deleted.text
    storage = open_storage(settings.storage_url)
    assert storage.list(job_prefix(job["id"])) == [], "files are deleted with the job"
