"""A private throwaway PostgreSQL for tests (never the machine's own server on 5432).

`PostgresServer` runs `initdb` into a temp dir and starts `postgres` directly (not via a
service manager) in its own process group, listening on a free loopback port and on a Unix
socket inside the temp dir. Tests can `kill()` it with SIGKILL (postmaster and every backend at
once, like a machine crash) and `start()` it again on the same data dir and port: PostgreSQL
then runs crash recovery from its WAL, exactly what a real restart does.

Fixtures: `postgres_server` (one per session), `postgres_url` (a fresh database per test) and
`postgres_factory` (private servers for tests that kill theirs).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conveyor.store.pg_migrations import migrate
from tests.servers.procfs import live_processes

START_TIMEOUT_S = 30.0
TEMPLATE = "conveyor_template"
SHARED_DB = "conveyor_tests"
_db_names = itertools.count()


def find_bin_dir() -> Path | None:
    """The directory holding `initdb` and `postgres`: on PATH, else the newest Debian one."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(on_path).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    return Path(found[-1]).parent if found else None


def _version_key(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


def server_user() -> tuple[int, int] | None:
    """PostgreSQL refuses to run as root: when we are root, run it as `postgres` (or nobody)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    raise RuntimeError("running as root and no unprivileged user to run PostgreSQL as")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """One private PostgreSQL cluster in `root`, owned by this process."""

    def __init__(self, root: Path, bin_dir: Path) -> None:
        self.root = root
        self.bin_dir = bin_dir
        self.data = root / "data"
        self.sockets = root / "sock"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "postgres.log"
        self.user = server_user()
        self._template_ready = False
        self._shared_ready = False

    def _as_user(self) -> dict[str, int]:
        return {} if self.user is None else {"user": self.user[0], "group": self.user[1]}

    def init(self) -> None:
        self.sockets.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            for path in (self.root, self.sockets):
                os.chown(path, *self.user)
        subprocess.run(
            [str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres",
             "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
            check=True, capture_output=True, **self._as_user(),
        )  # fmt: skip

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(self.bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-k", str(self.sockets), "-c", "listen_addresses=127.0.0.1",
             "-c", "max_connections=200", "-c", "shared_buffers=64MB",
             "-c", "fsync=on", "-c", "synchronous_commit=on",
             # Crash recovery starts by syncing the data dir: one syncfs, not an fsync per file.
             "-c", "recovery_init_sync_method=syncfs"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **self._as_user(),
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"postgres exited at start:\n{self.log_path.read_text()[-2000:]}"
                )
            try:
                with psycopg.connect(self.admin_url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                time.sleep(0.05)
        raise RuntimeError(f"postgres did not start in {START_TIMEOUT_S}s")

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def create_database(self, *, migrated: bool = True) -> str:
        """A fresh database (with conveyor's schema already applied, unless `migrated` is
        False); returns its URL. Copying a migrated template is much faster than migrating.
        """
        name = f"t{os.getpid()}_{next(_db_names)}"
        template = self._template() if migrated else "template0"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def create_schema(self) -> str:
        """A fresh, empty schema in one shared database, as a URL whose search_path points
        at it: for a store it is as good as a new database, and far cheaper to make.
        """
        name = f"s{os.getpid()}_{next(_db_names)}"
        if not self._shared_ready:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{SHARED_DB}" TEMPLATE template0')
            self._shared_ready = True
        with psycopg.connect(self.url(SHARED_DB), autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        return f"{self.url(SHARED_DB)}?options=-csearch_path%3D{name}"

    def _template(self) -> str:
        if not self._template_ready:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{TEMPLATE}" TEMPLATE template0')
            with psycopg.connect(self.url(TEMPLATE), autocommit=True) as conn:
                migrate(conn)
            self._template_ready = True
        return TEMPLATE

    def kill(self) -> None:
        """SIGKILL the postmaster and all its backends at once (a crash, no shutdown)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._wait_backends_gone()

    def _wait_backends_gone(self) -> None:
        # Backends of a killed postmaster may linger an instant; a new postmaster refuses to
        # start while they still hold the old shared memory. Zombies (reparented to an init
        # that may reap them late) hold nothing, so only live members of the group count.
        assert self.proc is not None
        pgid = self.proc.pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            alive = [p.pid for p in live_processes() if p.pgrp == pgid]
            if not alive:
                return
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        raise RuntimeError(f"PostgreSQL processes {alive} survived SIGKILL")

    def stop(self) -> None:
        """Immediate shutdown (SIGQUIT: no checkpoint, the data is thrown away), then SIGKILL
        if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()
        self._wait_backends_gone()

    def restart_after_kill(self) -> None:
        self.kill()
        self.start()


@contextlib.contextmanager
def running_server(root: Path | None = None) -> Iterator[PostgresServer]:
    """Start a private server in a temp dir; stop it and delete the dir afterwards."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, postgres) found")
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-pg-")) if root is None else root
    server = PostgresServer(tmp, bin_dir)
    try:
        server.init()
        for attempt in range(3):  # the free port may be taken by someone else meanwhile
            try:
                server.start()
                break
            except RuntimeError:
                if attempt == 2 or "could not bind" not in server.log_path.read_text():
                    raise
                server.port = free_port()
        yield server
    finally:
        server.stop()
        if root is None:
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL for the whole session; tests get their own databases on it."""
    with running_server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty store (its own schema) on the session's private server."""
    return postgres_server.create_schema()


@pytest.fixture
def postgres_factory() -> Iterator[PostgresServerFactory]:
    """Start private servers a test may kill and restart; all stopped at the end."""
    factory = PostgresServerFactory()
    try:
        yield factory
    finally:
        factory.close()


class PostgresServerFactory:
    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()

    def start(self) -> PostgresServer:
        return self._stack.enter_context(running_server())

    def close(self) -> None:
        self._stack.close()
