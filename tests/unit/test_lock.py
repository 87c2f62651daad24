"""The development environment is the lock: every installed package is pinned, at its version.

A dependency added to pyproject.toml without `make lock` would install unpinned on a fresh
clone (and drift with it); this catches it the first time the suite runs.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

LOCK = Path(__file__).parents[2] / "requirements" / "dev.lock"


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[_normalized(name)] = version
    return pins


def _vendored(dist: metadata.Distribution) -> bool:
    """Copies inside another package (setuptools puts its `_vendor` folder on sys.path once
    imported, e.g. by anonlink's pkg_resources): not installed, so not pinned."""
    return "_vendor" in Path(str(dist.locate_file(""))).parts


def test_every_installed_package_is_pinned_at_its_locked_version() -> None:
    locked = _locked()
    unpinned, moved = [], []
    for dist in metadata.distributions():
        name = _normalized(dist.metadata["Name"])
        if name == "conveyor" or _vendored(dist):
            continue
        if name not in locked:
            unpinned.append(f"{name}=={dist.version}")
        elif locked[name] != dist.version:
            moved.append(f"{name}: installed {dist.version}, locked {locked[name]}")
    assert not unpinned, f"installed but not in {LOCK.name} (run `make lock`): {unpinned}"
    assert not moved, f"the venv is not the lock (run `make install`): {moved}"
