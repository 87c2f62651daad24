"""Where the deployment checks keep their tools: a cache dir outside the work tree.

docker-compose 1.29.2 pins old libraries (PyYAML 5, jsonschema 3, …) that clash with the
project's, so it gets its own virtualenv here, created on first use. Its PyYAML 5.4 builds from
source against Cython, and only `cython<3` can compile it: that goes in as a pip constraint.
"""

from __future__ import annotations

import fcntl
import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

COMPOSE_VERSION = "1.29.2"


def cache_dir() -> Path:
    """`$CONVEYOR_DEPLOY_CACHE`, else `$XDG_CACHE_HOME/conveyor-deploy` (~/.cache/…)."""
    explicit = os.environ.get("CONVEYOR_DEPLOY_CACHE")
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    path = Path(explicit) if explicit else base / "conveyor-deploy"
    path.mkdir(parents=True, exist_ok=True)
    return path


def docker_compose() -> Path:
    """The docker-compose 1.29.2 executable, installed into its own venv if missing.

    Raises `RuntimeError` (with pip's output) when it cannot be installed.
    """
    venv = cache_dir() / f"compose-{COMPOSE_VERSION}"
    exe = venv / "bin" / "docker-compose"
    with (cache_dir() / "compose.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist or two make targets at once
        if exe.exists():
            return exe
        constraints = cache_dir() / "compose-constraints.txt"
        constraints.write_text("cython<3\n")
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            [str(venv / "bin" / "pip"), "install", "-q", "-c", str(constraints),
             f"docker-compose=={COMPOSE_VERSION}"],
        ]  # fmt: skip
        env = {**os.environ, "PIP_CONSTRAINT": str(constraints)}
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(step)} failed:\n{done.stderr[-2000:]}")
    return exe


def loud_skip(reason: str) -> None:
    """Skip, and say so on stderr where nobody can miss it (never a silent skip)."""
    banner = "!" * 78
    print(f"\n{banner}\nDEPLOYMENT CHECK SKIPPED: {reason}\n{banner}", file=sys.stderr)
    pytest.skip(f"DEPLOYMENT CHECK SKIPPED: {reason}", allow_module_level=True)


def loud_importorskip(module: str, package: str) -> ModuleType:
    """Import `module`, or skip the whole test module loudly naming the missing `package`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        loud_skip(f"{package} is not installed ({exc}); `make install` installs .[dev]")
        raise  # unreachable: skip raises
