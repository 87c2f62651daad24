"""The image's health check, for every role (standard library only; exit 0 = healthy).

The role is read from the running `conveyor` process's command line, so one `HEALTHCHECK`
serves every command the image is started with:

- `api` / `up`: `GET /healthz` on the port the process listens on answers 200.
- `worker`: this supervisor's heartbeat in the store (`conveyor workers --json`, matched by
  host name and pid) is younger than `CONVEYOR_HEALTH_STALE_S` (default: 60 s).
- anything else (`db migrate`, `keys`, one-shot commands): healthy while it runs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROLES = ("api", "up", "worker")


def conveyor_process() -> tuple[int, list[str]] | None:
    """The pid and arguments (after `conveyor`) of the first `conveyor <role>` process."""
    for proc in sorted(Path("/proc").glob("[0-9]*"), key=lambda p: int(p.name)):
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        for position, arg in enumerate(argv[:-1]):
            if Path(arg).name == "conveyor" and argv[position + 1] in ROLES:
                return int(proc.name), [a for a in argv[position + 1 :] if a]
    return None


def option(args: list[str], name: str, default: str) -> str:
    """The value of `--name VALUE` or `--name=VALUE` in `args`."""
    for position, arg in enumerate(args):
        if arg == name and position + 1 < len(args):
            return args[position + 1]
        if arg.startswith(name + "="):
            return arg.partition("=")[2]
    return default


def check_http(args: list[str]) -> str | None:
    """None if `/healthz` answers 200 on the process's port, else the reason."""
    port = int(option(args, "--port", "8000"))
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return None if response.status == 200 else f"{url} answered {response.status}"
    except OSError as exc:
        return f"{url}: {exc}"


def check_worker(pid: int) -> str | None:
    """None if this worker's last heartbeat in the store is fresh, else the reason."""
    stale_s = float(os.environ.get("CONVEYOR_HEALTH_STALE_S", "60"))
    done = subprocess.run(
        ["conveyor", "workers", "--json"], capture_output=True, text=True, timeout=20, check=False
    )
    if done.returncode != 0:
        return f"`conveyor workers` failed: {done.stderr.strip()[-300:]}"
    host = socket.gethostname()
    mine = [w for w in json.loads(done.stdout) if w.get("host") == host and w.get("pid") == pid]
    if not mine:
        return f"no heartbeat from worker {host}:{pid} in the store"
    seen = datetime.fromisoformat(str(mine[0]["last_seen"]).replace("Z", "+00:00"))
    age = (datetime.now(UTC) - seen).total_seconds()
    return None if age <= stale_s else f"last heartbeat {age:.0f}s ago (limit {stale_s:.0f}s)"


def main() -> int:
    found = conveyor_process()
    if found is None:
        return 0  # a one-shot command (migrate, keys): nothing long-running to probe
    pid, args = found
    problem = check_worker(pid) if args[0] == "worker" else check_http(args)
    if problem is not None:
        print(f"unhealthy ({args[0]}): {problem}", file=sys.stderr)
        return 1
    print(f"healthy ({args[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
