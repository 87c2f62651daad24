"""Blob storage, chosen by URL: `file:///dir` (default) or `s3://bucket/prefix`."""

from __future__ import annotations

from conveyor import errors
from conveyor.storage.base import BlobInfo, BlobStorage, check_name, job_key, job_prefix

__all__ = ["BlobInfo", "BlobStorage", "check_name", "job_key", "job_prefix", "open_storage"]


def open_storage(url: str) -> BlobStorage:
    """Open the blob storage a URL names."""
    scheme = url.partition("://")[0].lower() if "://" in url else "file"
    match scheme:
        case "file":
            from conveyor.storage.fs import FileStorage

            return FileStorage.from_url(url)
        case "s3":
            from conveyor.storage.s3 import S3Storage  # type: ignore[import-not-found,unused-ignore]

            storage: BlobStorage = S3Storage.from_url(url)
            return storage
    raise errors.ConfigurationError(f"unknown storage {url!r}; use file:///dir or s3://bucket")
