"""Podman with private configuration, and the local base image the image test builds on.

Docker Hub is not reachable from the test machines, so the base image is made here:
`debootstrap --variant=minbase bookworm` → `podman import` → a tiny build that installs
python3 into it (`base.Containerfile`). It is cached under the deploy cache dir between runs.

Podman on these machines needs `runc` (crun fails on their cgroup v1 setup), the `cgroupfs`
cgroup manager and explicit default ulimits; its storage lives under the cache dir and its
run state under /run, never in the machine's /var/lib/containers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy.tools import cache_dir

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BASE_IMAGE = "localhost/conveyor-base:bookworm-python3"
MINBASE_IMAGE = "localhost/debian-minbase:bookworm"
DEBIAN_MIRROR = os.environ.get("CONVEYOR_DEBIAN_MIRROR", "http://deb.debian.org/debian")
NEEDED = ("podman", "runc", "debootstrap")

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
tmp_dir = "{run}/libpod-tmp"
"""

STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "{graph}"
runroot = "{run}/storage"
"""


def missing_tools() -> list[str]:
    return [name for name in NEEDED if shutil.which(name) is None]


@dataclass
class Podman:
    """`podman` bound to this test suite's own containers.conf and storage.conf."""

    home: Path = field(default_factory=lambda: cache_dir() / "podman")

    def __post_init__(self) -> None:
        # Run state goes on /run (cleared at boot, as podman expects); storage is cached.
        runtime = Path("/run") if os.access("/run", os.W_OK) else self.home
        self.run_dir = runtime / "conveyor-deploy-podman"
        self.home.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.containers_conf = self.home / "containers.conf"
        self.storage_conf = self.home / "storage.conf"
        self.containers_conf.write_text(CONTAINERS_CONF.format(run=self.run_dir))
        self.storage_conf.write_text(
            STORAGE_CONF.format(graph=self.home / "storage", run=self.run_dir)
        )

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CONTAINERS_CONF": str(self.containers_conf),
            "CONTAINERS_STORAGE_CONF": str(self.storage_conf),
        }

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 600, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True,
            timeout=timeout, check=False, input=input,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done

    def image_exists(self, name: str) -> bool:
        return self("image", "exists", name, check=False).returncode == 0


def host_ca_bundle() -> Path | None:
    """The CA bundle this machine's pip trusts (a TLS-intercepting proxy needs it in builds)."""
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"),
                      "/etc/ssl/certs/ca-certificates.crt"):  # fmt: skip
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def ensure_base_image(podman: Podman) -> str:
    """The Debian bookworm + python3 base image, built once and cached in podman's storage."""
    if podman.image_exists(BASE_IMAGE):
        return BASE_IMAGE
    if not podman.image_exists(MINBASE_IMAGE):
        with tempfile.TemporaryDirectory(prefix="conveyor-rootfs-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            subprocess.run(
                ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR],
                check=True, capture_output=True, timeout=900,
            )  # fmt: skip
            tarball = Path(tmp) / "rootfs.tar"
            subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
            podman("import", str(tarball), MINBASE_IMAGE)
    podman(
        "build", "--network", "host", "--build-arg", f"MINBASE={MINBASE_IMAGE}",
        "-f", str(HERE / "base.Containerfile"), "-t", BASE_IMAGE, str(HERE), timeout=900,
    )  # fmt: skip
    return BASE_IMAGE


def build_image(podman: Podman, base: str, tag: str) -> None:
    """Build deploy/Dockerfile from the repository root on `base`."""
    # docker format: OCI images cannot carry a HEALTHCHECK.
    args = ["build", "--format", "docker", "--network", "host", "--build-arg", f"BASE_IMAGE={base}"]
    ca = host_ca_bundle()
    if ca is not None:
        args += ["--volume", f"{ca}:/run/host-ca.crt:ro", "--build-arg",
                 "PIP_CERT=/run/host-ca.crt"]  # fmt: skip
    args += ["-f", str(ROOT / "deploy" / "Dockerfile"), "-t", tag, str(ROOT)]
    podman(*args, timeout=1200)
    # Each rebuild leaves the previous image untagged: keep the cache from growing.
    podman("image", "prune", "--force", check=False)


def main(argv: list[str]) -> int:
    """`python -m tests.deploy.podman TAG [BASE_IMAGE]` (what `make image` runs).

    Builds deploy/Dockerfile with this module's podman configuration. Without BASE_IMAGE it
    builds on the local Debian base (made once with debootstrap), since public registries
    may be unreachable; pass e.g. docker.io/library/python:3.12-slim-bookworm to use one.
    """
    import time

    missing = missing_tools()
    if missing:
        print(f"missing: {', '.join(missing)} (make test-deploy installs them)")
        return 2
    tag = argv[0] if argv else "localhost/conveyor:latest"
    podman = Podman()
    started = time.monotonic()
    base = argv[1] if len(argv) > 1 else ensure_base_image(podman)
    build_image(podman, base, tag)
    size = podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip()
    print(f"built {tag} on {base} in {time.monotonic() - started:.0f}s "
          f"({int(size) / 1e6:.0f} MB)")  # fmt: skip
    print(
        f"use it: CONTAINERS_CONF={podman.containers_conf} "
        f"CONTAINERS_STORAGE_CONF={podman.storage_conf} podman run --rm {tag} --help"
    )
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
