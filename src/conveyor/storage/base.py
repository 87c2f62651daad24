"""The BlobStorage contract: named blobs under keys like `jobs/<id>/out/<name>`.

Keys are built only by `job_key`, which accepts safe file names only, so a key can never
escape its job's prefix whatever a client sends.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from conveyor import errors

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
Direction = Literal["in", "out"]


@dataclass(frozen=True, slots=True)
class BlobInfo:
    key: str
    name: str
    size: int
    modified: float


def check_name(name: str) -> str:
    """Return `name` if it is a safe file name (letters, digits, `._-`, no leading dot)."""
    if not SAFE_NAME.match(name) or ".." in name:
        raise errors.FileError(
            f"invalid file name {name!r}: use 1-200 letters, digits, '.', '_' or '-', not"
            " starting with a dot",
            name=name,
        )
    return name


def job_prefix(job_id: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F-]{1,64}", job_id):
        raise errors.FileError(f"invalid job id {job_id!r}")
    return f"jobs/{job_id}/"


def job_key(job_id: str, direction: Direction, name: str) -> str:
    return f"{job_prefix(job_id)}{direction}/{check_name(name)}"


class TooLargeError(errors.FileError):
    """The file is larger than the allowed size."""

    type = "file-too-large"
    status = 413


@runtime_checkable
class BlobStorage(Protocol):
    """Where job input and output files live."""

    def write(self, key: str, chunks: Iterable[bytes], max_bytes: int | None = None) -> int:
        """Store a blob from a stream, atomically (all or nothing); return its size.

        Raises `TooLargeError` (and stores nothing) past `max_bytes`.
        """
        ...

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Stream a blob's bytes `[start, end)`; `FileError` (404) if missing."""
        ...

    def stat(self, key: str) -> BlobInfo:
        """Size and time of a blob; `FileError` (404) if missing."""
        ...

    def list(self, prefix: str) -> list[BlobInfo]: ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every blob under the prefix; return how many."""
        ...

    def download(self, key: str, dest: Path) -> None:
        """Copy a blob to a local file."""
        ...

    def upload(self, key: str, src: Path) -> int:
        """Store a local file as a blob; return its size."""
        ...


class MissingFileError(errors.FileError):
    """No such file."""

    type = "file-not-found"
    status = 404
