"""Blob storage in a local directory (the default)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from conveyor import errors
from conveyor.storage.base import BlobInfo, MissingFileError, TooLargeError

CHUNK = 1 << 20


class FileStorage:
    """Blobs as files under `root`. Writes land in a temp file first, then are renamed."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._tmp = self.root / ".tmp"
        self._tmp.mkdir(exist_ok=True)

    @classmethod
    def from_url(cls, url: str) -> FileStorage:
        """`file:///abs/dir` or `file://relative/dir`."""
        path = url.split("://", 1)[1] if "://" in url else url
        return cls(path)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
            raise errors.FileError(f"invalid storage key {key!r}")
        path = self.root.joinpath(*parts)
        # Refuse symlinks anywhere on the way: a planted link must not lead outside the root.
        probe = self.root
        for part in parts:
            probe = probe / part
            if probe.is_symlink():
                raise errors.FileError(f"refusing to follow a symlink at {key!r}")
        return path

    def write(self, key: str, chunks: Iterable[bytes], max_bytes: int | None = None) -> int:
        path = self._path(key)
        fd, tmp = tempfile.mkstemp(dir=self._tmp)
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise TooLargeError(
                            f"file is larger than the limit of {max_bytes} bytes", limit=max_bytes
                        )
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return size

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        path = self._path(key)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by the generator
        except FileNotFoundError:
            raise MissingFileError(f"no file {key!r}") from None
        return _stream(handle, start, end)

    def stat(self, key: str) -> BlobInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise MissingFileError(f"no file {key!r}") from None
        return BlobInfo(key=key, name=path.name, size=st.st_size, modified=st.st_mtime)

    def list(self, prefix: str) -> list[BlobInfo]:
        base = self._path(prefix.rstrip("/"))
        if not base.is_dir():
            return []
        found = []
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.is_symlink():
                st = path.stat()
                key = path.relative_to(self.root).as_posix()
                found.append(
                    BlobInfo(key=key, name=path.name, size=st.st_size, modified=st.st_mtime)
                )
        return found

    def delete_prefix(self, prefix: str) -> int:
        base = self._path(prefix.rstrip("/"))
        if not base.exists():
            return 0
        count = sum(1 for p in base.rglob("*") if p.is_file())
        shutil.rmtree(base, ignore_errors=True)
        return count

    def download(self, key: str, dest: Path) -> None:
        src = self._path(key)
        if not src.is_file():
            raise MissingFileError(f"no file {key!r}")
        shutil.copyfile(src, dest)

    def upload(self, key: str, src: Path) -> int:
        with open(src, "rb") as handle:
            return self.write(key, iter(lambda: handle.read(CHUNK), b""))


def _stream(handle: object, start: int, end: int | None) -> Iterator[bytes]:
    with handle as f:  # type: ignore[attr-defined]
        f.seek(start)
        remaining = None if end is None else max(0, end - start)
        while remaining is None or remaining > 0:
            chunk = f.read(CHUNK if remaining is None else min(CHUNK, remaining))
            if not chunk:
                break
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk
