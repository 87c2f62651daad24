"""Wake idle workers when work arrives, without polling.

For a store shared by processes on one machine (SQLite), each waiting process binds a Unix
datagram socket in a per-database directory; whoever makes work available sends one byte to
every socket there. A lost wake-up only costs latency: waiters also time out and re-check.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import socket
import tempfile
import threading
from pathlib import Path


class ThreadWaker:
    """Wakes waiters in this process only (in-memory stores)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    def notify(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(self, timeout: float) -> None:
        with self._cond:
            start = self._generation
            self._cond.wait_for(lambda: self._generation != start, timeout)

    def close(self) -> None:
        self.notify()


class SocketWaker:
    """Wakes waiters in any process on this machine that use the same database file."""

    def __init__(self, db_path: str) -> None:
        digest = hashlib.sha1(os.path.realpath(db_path).encode(), usedforsecurity=False)
        self._dir = Path(tempfile.gettempdir()) / f"conveyor-wake-{digest.hexdigest()[:16]}"
        self._sock: socket.socket | None = None
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)
        self._lock = threading.Lock()

    def _listen(self) -> socket.socket:
        if self._sock is None:
            self._dir.mkdir(mode=0o700, exist_ok=True)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            path = self._dir / f"{os.getpid()}-{os.urandom(4).hex()}"
            sock.bind(str(path))
            sock.setblocking(False)
            self._sock, self._path = sock, path
        return self._sock

    def notify(self) -> None:
        try:
            names = os.listdir(self._dir)
        except FileNotFoundError:
            return
        with self._lock:
            for name in names:
                target = str(self._dir / name)
                try:
                    self._sender.sendto(b"w", target)
                except (ConnectionRefusedError, FileNotFoundError):
                    with contextlib.suppress(OSError):
                        os.unlink(target)  # its process is gone
                except (BlockingIOError, OSError):
                    pass  # its buffer is full of wake-ups already

    def wait(self, timeout: float) -> None:
        sock = self._listen()
        readable, _, _ = select.select([sock], [], [], timeout)
        if readable:
            with contextlib.suppress(BlockingIOError):
                while sock.recv(64):
                    pass

    def close(self) -> None:
        self._sender.close()
        if self._sock is not None:
            self._sock.close()
            with contextlib.suppress(OSError):
                os.unlink(self._path)
            self._sock = None
