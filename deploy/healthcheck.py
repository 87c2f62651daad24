"""The image's health check, for every role (standard library only; exit 0 = healthy).

The role is read from the running `conveyor` process's command line, so one `HEALTHCHECK`
serves every command the image is started with:

- `api` / `up`: `GET /healthz` on the port the process listens on answers 200.
- `worker`: this supervisor's heartbeat in the store (`conveyor workers --json`, matched by
  host name and pid) is younger than `CONVEYOR_HEALTH_STALE_S` (default: 60 s), or, when
  that record lags behind, the supervisor still renews a lease it holds on a running job.
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


def conveyor_json(*args: str) -> object:
    """The JSON a `conveyor ... --json` command prints; `RuntimeError` if it fails."""
    done = subprocess.run(
        ["conveyor", *args, "--json"], capture_output=True, text=True, timeout=20, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"`conveyor {' '.join(args)}` failed: {done.stderr.strip()[-300:]}")
    return json.loads(done.stdout)


def age_s(timestamp: str) -> float:
    """Seconds since an ISO timestamp (negative: in the future)."""
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (datetime.now(UTC) - moment).total_seconds()


def holds_live_lease(worker_id: str) -> bool:
    """True if the worker owns an unexpired lease: it is renewing its running jobs."""
    page = conveyor_json("jobs", "list", "--state", "running", "--limit", "1000")
    jobs = page.get("jobs", []) if isinstance(page, dict) else []
    return any(
        (j.get("lease") or {}).get("owner") == worker_id and age_s(j["lease"]["expires_at"]) < 0
        for j in jobs
    )


def check_worker(pid: int) -> str | None:
    """None if this worker's heartbeat in the store is fresh, else the reason."""
    stale_s = float(os.environ.get("CONVEYOR_HEALTH_STALE_S", "60"))
    try:
        workers = conveyor_json("workers")
        host = socket.gethostname()
        found = workers if isinstance(workers, list) else []
        mine = [w for w in found if w.get("host") == host and w.get("pid") == pid]
        if not mine:
            return f"no heartbeat from worker {host}:{pid} in the store"
        age = age_s(str(mine[0]["last_seen"]))
        if age <= stale_s or holds_live_lease(str(mine[0]["id"])):
            return None
    except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError, KeyError) as exc:
        return str(exc)
    return f"last heartbeat {age:.0f}s ago (limit {stale_s:.0f}s) and no live lease"


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
