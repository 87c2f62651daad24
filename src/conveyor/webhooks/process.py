"""The webhook dispatcher's process beside a worker, restarted when it dies.

`conveyor worker` and `conveyor up` run the dispatcher as a child process. Killed (OOM killer,
an operator's stray `kill`), it used to stay a zombie while webhooks silently stopped; now a
watcher thread reaps it, logs why it ended, and starts a new one, as the supervisor does for
a job child. Restarts back off (1 s doubling to 30 s) while it keeps dying at once, and the
delay resets once a dispatcher has run for a minute.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Sequence

log = logging.getLogger("conveyor.webhooks")

RESTART_MIN_S = 1.0
RESTART_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0


def describe(returncode: int) -> str:
    """`killed by SIGKILL` or `exit code 3`."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class SupervisedProcess:
    """Runs `command` until `stop()`, restarting it whenever it ends on its own."""

    def __init__(self, command: Sequence[str], name: str, stop_timeout_s: float) -> None:
        self.command = list(command)
        self.name = name
        self.stop_timeout_s = stop_timeout_s
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._watcher = threading.Thread(target=self._watch, name=f"{name}-watch", daemon=True)

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._process.pid if self._process else None

    def start(self) -> None:
        with self._lock:
            self._process = self._spawn()
        self._watcher.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        # Its own session: Ctrl-C drains the supervisor for a while, and the events of jobs
        # that finish meanwhile should still go out; `stop()` (or the parent's death) ends it.
        return subprocess.Popen(self.command, stdin=subprocess.DEVNULL, start_new_session=True)

    def _watch(self) -> None:
        delay = RESTART_MIN_S
        while True:
            with self._lock:
                process = self._process
            assert process is not None
            started = time.monotonic()
            returncode = process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= HEALTHY_AFTER_S:
                delay = RESTART_MIN_S
            log.warning(
                "%s (pid %d) ended (%s); restarting it in %.0f s", self.name, process.pid,
                describe(returncode), delay,
            )  # fmt: skip
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self._process = self._spawn()
                self.restarts += 1
                log.warning("%s restarted (pid %d)", self.name, self._process.pid)
            delay = min(delay * 2, RESTART_MAX_S)

    def stop(self) -> None:
        """Terminate the process (kill it after `stop_timeout_s`) and stop restarting it."""
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is None:
            return
        process.terminate()
        try:
            process.wait(self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._watcher.join(timeout=5)
