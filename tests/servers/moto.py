"""A private moto_server (an S3-compatible server) for tests: free loopback port, stopped by PID.

Fixtures: `moto_server` (one per session: its endpoint URL) and `s3_bucket` (a fresh bucket per
test, with an `S3Settings` pointing at it).
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.servers.http import free_port

START_TIMEOUT_S = 30.0
ACCESS_KEY = "moto-access-key"
SECRET_KEY = "moto-secret-key"
REGION = "eu-central-2"
_buckets = itertools.count()


@dataclass(frozen=True)
class Bucket:
    endpoint: str
    name: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION

    def settings(self, **extra: object):  # -> S3Settings (import kept lazy: boto3 is optional)
        from conveyor.storage.s3 import S3Settings

        return S3Settings(
            endpoint_url=self.endpoint,
            region=self.region,
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
            **extra,
        )

    def client(self):
        from conveyor.storage.s3 import make_client

        return make_client(self.settings())


def start_moto(port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/moto-api/", timeout=1.0)
            return process
        except httpx.HTTPError:
            time.sleep(0.1)
    stop(process)
    raise RuntimeError("moto_server did not start in time")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    port = free_port()
    process = start_moto(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


@pytest.fixture
def s3_bucket(moto_server: str) -> Bucket:
    bucket = Bucket(moto_server, f"conveyor-test-{os.getpid()}-{next(_buckets)}")
    bucket.client().create_bucket(
        Bucket=bucket.name, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    return bucket
