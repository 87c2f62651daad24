"""A private throwaway Redis for tests (never the machine's own server on 6379).

`RedisServer` starts `redis-server` directly on a free loopback port with its data (the
append-only file) in a temp dir. Tests can `kill()` it with SIGKILL and `start()` it again on
the same port and dir: Redis then reloads its append-only file, exactly as after a crash.

Fixtures: `redis_server` (one per session), `redis_url` (an empty database per test) and
`redis_factory` (private servers for tests that kill theirs or need other settings).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

START_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One private redis-server in `root`, owned by this process."""

    def __init__(
        self, root: Path, *, appendonly: bool = True, appendfsync: str = "everysec"
    ) -> None:
        self.root = root
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)

    def start(self) -> None:
        """Start (or restart after `kill`) on the same port and dir; wait until it answers."""
        assert self.proc is None, "already running"
        args = [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.root),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.log_path),
            "--protected-mode", "yes",
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        client = self.client()
        try:
            while True:
                if self.proc.poll() is not None:
                    code = self.proc.returncode
                    self.proc = None
                    raise RuntimeError(f"redis-server exited ({code}): {self.log_tail()}")
                try:
                    if client.ping():
                        return  # PING fails with LOADING until the append-only file is read
                except (redis.ConnectionError, redis.ResponseError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start: {self.log_tail()}")
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL, like a crash: no shutdown save, no flush beyond what fsync already did."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
            self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        return ""


def redis_available() -> bool:
    return shutil.which("redis-server") is not None


@contextlib.contextmanager
def running_redis(**options: object) -> Iterator[RedisServer]:
    root = Path(tempfile.mkdtemp(prefix="conveyor-redis-"))
    server = RedisServer(root, **options)  # type: ignore[arg-type]
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    if not redis_available():
        pytest.skip("redis-server is not installed")
    with running_redis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A URL to an empty database on the session's private server."""
    client = redis_server.client()
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., RedisServer]]:
    """Start private servers (`appendfsync=`, `appendonly=`) that the test may kill."""
    if not redis_available():
        pytest.skip("redis-server is not installed")
    with contextlib.ExitStack() as stack:

        def make(**options: object) -> RedisServer:
            return stack.enter_context(running_redis(**options))

        yield make
