"""Blob storage in an S3-compatible bucket (AWS S3, MinIO, Ceph, moto): `s3://bucket/prefix`.

Uploads stream in parts (one part buffered at a time, so memory stays bounded whatever the
file size) and become visible only when the multipart upload completes: a failed or too-large
upload is aborted and leaves nothing behind. Downloads stream the object body in chunks.

Connection settings come from `CONVEYOR_S3_*` variables; credentials from the standard AWS
chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, profiles, instance roles) unless
`CONVEYOR_S3_ACCESS_KEY_ID`/`CONVEYOR_S3_SECRET_ACCESS_KEY` are set.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from conveyor import errors
from conveyor.storage.base import BlobInfo, MissingFileError, TooLargeError

CHUNK = 1 << 20
MIN_PART = 5 << 20  # S3's smallest allowed part (all but the last)


class S3Settings(BaseSettings):
    """`CONVEYOR_S3_*` settings; anything unset falls back to boto3's own defaults."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_S3_", extra="ignore")

    endpoint_url: str | None = Field(None, description="e.g. http://minio:9000; unset = AWS.")
    region: str | None = Field(None, description="e.g. eu-central-2; unset = AWS default chain.")
    access_key_id: str | None = Field(
        None, description="Access key; else the standard AWS variables and config files."
    )
    secret_access_key: str | None = Field(None, description="Secret key for `ACCESS_KEY_ID`.")
    presign_endpoint_url: str | None = Field(
        None, description="Endpoint put into presigned URLs when clients reach S3 differently."
    )
    part_size: int = Field(8 << 20, ge=MIN_PART, le=5 << 30, description="Multipart part size.")
    addressing_style: Literal["auto", "path", "virtual"] | None = Field(
        None, description="`path` (default with a custom endpoint, e.g. MinIO), `virtual`, `auto`."
    )


class S3Storage:
    """Blobs as objects under `prefix` in `bucket`."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        settings: S3Settings | None = None,
        client: Any = None,
    ) -> None:
        if not bucket:
            raise errors.ConfigurationError("an S3 storage URL needs a bucket: s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.settings = settings or S3Settings()
        self.client = client or make_client(self.settings)
        self._presigner: Any = None

    @classmethod
    def from_url(cls, url: str, settings: S3Settings | None = None) -> S3Storage:
        """`s3://bucket` or `s3://bucket/some/prefix`."""
        rest = url.split("://", 1)[1]
        bucket, _, prefix = rest.partition("/")
        return cls(bucket, prefix, settings=settings)

    # -- keys -------------------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
            raise errors.FileError(f"invalid storage key {key!r}")
        return self.prefix + key

    def _unkey(self, object_key: str) -> str:
        return object_key[len(self.prefix) :]

    # -- writing ------------------------------------------------------------------------------

    def write(self, key: str, chunks: Iterable[bytes], max_bytes: int | None = None) -> int:
        """Stream `chunks` into one object: a single PUT when small, else a multipart upload."""
        target = self._key(key)
        part_size = self.settings.part_size
        buffer = bytearray()
        size = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            for chunk in chunks:
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise TooLargeError(
                        f"file is larger than the limit of {max_bytes} bytes", limit=max_bytes
                    )
                buffer += chunk
                while len(buffer) >= part_size:
                    if upload_id is None:
                        upload_id = self._call(
                            self.client.create_multipart_upload, Bucket=self.bucket, Key=target
                        )["UploadId"]
                    parts.append(self._part(target, upload_id, len(parts) + 1, buffer[:part_size]))
                    del buffer[:part_size]
            if upload_id is None:
                self._call(
                    self.client.put_object, Bucket=self.bucket, Key=target, Body=bytes(buffer)
                )
                return size
            if buffer or not parts:
                parts.append(self._part(target, upload_id, len(parts) + 1, buffer))
            self._call(
                self.client.complete_multipart_upload,
                Bucket=self.bucket,
                Key=target,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
            return size
        except BaseException:
            if upload_id is not None:
                with contextlib.suppress(Exception):
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=target, UploadId=upload_id
                    )
            raise

    def _part(self, target: str, upload_id: str, number: int, data: bytearray) -> dict[str, Any]:
        answer = self._call(
            self.client.upload_part,
            Bucket=self.bucket,
            Key=target,
            UploadId=upload_id,
            PartNumber=number,
            Body=bytes(data),
        )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def upload(self, key: str, src: Path) -> int:
        with open(src, "rb") as handle:
            return self.write(key, iter(lambda: handle.read(CHUNK), b""))

    # -- reading --------------------------------------------------------------------------------

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        target = self._key(key)
        if end is not None and end <= start:
            self.stat(key)  # still 404 for a missing object
            return iter(())
        extra: dict[str, Any] = {}
        if start or end is not None:
            extra["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=target, **extra)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "InvalidRange":
                return iter(())
            raise self._translate(exc, key) from None
        except BotoCoreError as exc:
            raise self._translate(exc, key) from None
        return _body_chunks(answer["Body"])

    def stat(self, key: str) -> BlobInfo:
        target = self._key(key)
        answer = self._call(self.client.head_object, Bucket=self.bucket, Key=target, _key=key)
        return BlobInfo(
            key=key,
            name=key.rsplit("/", 1)[-1],
            size=int(answer["ContentLength"]),
            modified=answer["LastModified"].timestamp(),
        )

    def list(self, prefix: str) -> list[BlobInfo]:
        base = self._key(prefix.rstrip("/")) + "/"
        found = []
        for obj in self._objects(base):
            key = self._unkey(obj["Key"])
            found.append(
                BlobInfo(
                    key=key,
                    name=key.rsplit("/", 1)[-1],
                    size=int(obj["Size"]),
                    modified=obj["LastModified"].timestamp(),
                )
            )
        return sorted(found, key=lambda b: b.key)

    def _objects(self, base: str) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
                yield from page.get("Contents", [])
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, base) from None

    def delete_prefix(self, prefix: str) -> int:
        base = self._key(prefix.rstrip("/")) + "/"
        keys = [{"Key": obj["Key"]} for obj in self._objects(base)]
        for start in range(0, len(keys), 1000):
            self._call(
                self.client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": keys[start : start + 1000], "Quiet": True},
            )
        return len(keys)

    def download(self, key: str, dest: Path) -> None:
        chunks = self.read(key)
        tmp = dest.with_name(dest.name + ".part")
        try:
            with open(tmp, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
            tmp.replace(dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    # -- presigned URLs -----------------------------------------------------------------------

    def presign(self, key: str, method: Literal["GET", "PUT"] = "GET", expires_s: int = 900) -> str:
        """A URL that lets its holder GET (or PUT) this one object for `expires_s` seconds."""
        operation = {"GET": "get_object", "PUT": "put_object"}.get(method.upper())
        if operation is None:
            raise errors.InvalidInputError(f"cannot presign {method!r}; use GET or PUT")
        if not 1 <= expires_s <= 7 * 86400:
            raise errors.InvalidInputError("a presigned URL lives between 1 s and 7 days")
        if self._presigner is None:
            public = self.settings.presign_endpoint_url
            self._presigner = (
                make_client(self.settings.model_copy(update={"endpoint_url": public}))
                if public
                else self.client
            )
        url: str = self._presigner.generate_presigned_url(
            operation,
            Params={"Bucket": self.bucket, "Key": self._key(key)},
            ExpiresIn=expires_s,
        )
        return url

    # -- errors -----------------------------------------------------------------------------------

    def _call(self, fn: Any, *args: Any, _key: str | None = None, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, _key or kwargs.get("Key", "")) from None

    def _translate(self, exc: Exception, key: str) -> errors.ConveyorError:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                return MissingFileError(f"no file {key!r}")
            if code == "NoSuchBucket":
                return errors.ConfigurationError(
                    f"the bucket {self.bucket!r} does not exist; create it or fix CONVEYOR_STORAGE"
                )
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return errors.ConfigurationError(
                    f"S3 refused access to {self.bucket!r} ({code}); check the S3 credentials"
                )
            return errors.FileError(f"S3 error on {key!r}: {code} {error.get('Message', '')}")
        return errors.FileError(f"cannot reach S3 for {key!r}: {exc}")


def make_client(settings: S3Settings) -> Any:
    """A boto3 S3 client for these settings (path-style addressing for custom endpoints)."""
    style = settings.addressing_style or ("path" if settings.endpoint_url else "auto")
    config = Config(
        s3={"addressing_style": style},
        retries={"max_attempts": 5, "mode": "standard"},
        signature_version="s3v4",
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        config=config,
    )


def _body_chunks(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(CHUNK)
    finally:
        body.close()
