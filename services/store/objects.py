"""Object stores for blobs the database should not hold (a registered voice's reference speech, files and batch
outputs of the Files API).

Two implementations of one small protocol: a directory (the default, under the data directory)
and an S3-compatible bucket (``s3://bucket/prefix``; AWS, MinIO, Ceph, R2...). Credentials for S3
come from boto3's standard chain: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (and
``AWS_SESSION_TOKEN``), a profile, or the pod's workload identity.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlparse

from services.core.contracts.specs import ObjectStoreSettings

KEY = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
CHUNK_BYTES = 1 << 20  # what a streamed read holds at once


class ObjectMissing(KeyError):
    """No object under this key."""


class ObjectChunks:
    """An object's bytes (or a range of them) as chunks of at most ``CHUNK_BYTES``, read as they are asked for;
    ``close`` lets go of the file or the S3 connection (also at the end, and when used as a context manager)."""

    def __init__(self, chunks: Iterator[bytes], close: Callable[[], None]) -> None:
        self._chunks = chunks
        self._close = close
        self._closed = False

    def __iter__(self) -> ObjectChunks:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except StopIteration:
            self.close()
            raise

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> ObjectChunks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ObjectStore(Protocol):
    """Whole objects under ``/``-separated keys. ``put`` is atomic: a reader sees all of it or nothing."""

    url: str

    def put(self, key: str, data: bytes) -> None: ...

    def put_file(self, key: str, source: BinaryIO) -> None:
        """``put`` of what ``source`` holds from its position on, copied in chunks (never whole in memory)."""
        ...

    def get(self, key: str) -> bytes:
        """The object's bytes; ``ObjectMissing`` if there is none."""
        ...

    def open(self, key: str, start: int = 0, length: int | None = None) -> ObjectChunks:
        """``length`` bytes of the object from ``start`` (to its end: None), streamed; ``ObjectMissing`` (raised
        here, before any chunk) if there is none."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; nothing happens if there is none."""
        ...

    def keys(self, prefix: str = "") -> dict[str, float]:
        """The keys that start with ``prefix``, each with its last change (Unix seconds)."""
        ...


def _check(key: str) -> str:
    if not KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"bad object key {key!r}")
    return key


class DirectoryObjectStore:
    """Files under a directory: written to a temporary file beside the target, then renamed into place."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _check(key)

    def put(self, key: str, data: bytes) -> None:
        self._write(key, lambda handle: handle.write(data))

    def put_file(self, key: str, source: BinaryIO) -> None:
        self._write(key, lambda handle: shutil.copyfileobj(source, handle, CHUNK_BYTES))

    def _write(self, key: str, write: Callable[[BinaryIO], Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, staging = tempfile.mkstemp(prefix=".incoming-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(staging, path)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(key) from None

    def open(self, key: str, start: int = 0, length: int | None = None) -> ObjectChunks:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        handle.seek(start)

        def chunks() -> Iterator[bytes]:
            left = length
            while left is None or left > 0:
                chunk = handle.read(CHUNK_BYTES if left is None else min(CHUNK_BYTES, left))
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk

        return ObjectChunks(chunks(), handle.close)

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        for parent in path.parents:  # drop directories left empty, up to the root
            if parent == self.root or not parent.is_relative_to(self.root):
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def keys(self, prefix: str = "") -> dict[str, float]:
        found = {p.relative_to(self.root).as_posix(): p for p in self.root.rglob("*") if p.is_file()}
        return {k: p.stat().st_mtime for k, p in sorted(found.items())
                if k.startswith(prefix) and not k.rsplit("/", 1)[-1].startswith(".")}


class S3ObjectStore:
    """An S3-compatible bucket, under an optional key prefix. boto3 is imported only when one is used."""

    def __init__(self, url: str, endpoint_url: str | None = None, region: str | None = None,
                 client: Any = None) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"an S3 object store URL looks like s3://bucket/prefix, not {url!r}")
        self.url, self.bucket = url, parsed.netloc
        self.prefix = parsed.path.strip("/") + "/" if parsed.path.strip("/") else ""
        if client is None:
            import boto3

            client = boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region or None)
        self.client = client

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + _check(key), Body=data)

    def put_file(self, key: str, source: BinaryIO) -> None:
        """boto3's managed upload: one PUT, or a multipart upload of 8-MiB parts for a large file."""
        self.client.upload_fileobj(source, self.bucket, self.prefix + _check(key))

    def get(self, key: str) -> bytes:
        with self.open(key) as chunks:
            return b"".join(chunks)

    def open(self, key: str, start: int = 0, length: int | None = None) -> ObjectChunks:
        """One GET, ranged unless it is the whole object, its body read ``CHUNK_BYTES`` at a time."""
        extra: dict[str, str] = {}
        if start or length is not None:
            extra["Range"] = f"bytes={start}-{'' if length is None else start + max(length, 1) - 1}"
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + _check(key), **extra)
        except self.client.exceptions.NoSuchKey:
            raise ObjectMissing(key) from None
        body = response["Body"]
        return ObjectChunks(iter(body.iter_chunks(CHUNK_BYTES)) if length != 0 else iter(()), body.close)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + _check(key))

    def keys(self, prefix: str = "") -> dict[str, float]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
        return {item["Key"][len(self.prefix):]: item["LastModified"].timestamp()
                for page in pages for item in page.get("Contents", [])}


def object_store_settings(configured: ObjectStoreSettings | None = None,
                          options: dict[str, Any] | None = None) -> ObjectStoreSettings:
    """A vc model's ``options.object_store_url`` (``_endpoint_url``, ``_region``), else the config's
    ``object_store``, else $HARMONY_OBJECT_STORE_URL (``_ENDPOINT_URL``, ``_REGION``)."""
    options = options or {}
    if options.get("object_store_url"):
        return ObjectStoreSettings(url=str(options["object_store_url"]),
                                   endpoint_url=options.get("object_store_endpoint_url") or None,
                                   region=options.get("object_store_region") or None)
    if configured is not None and configured.url:
        return configured
    env = os.environ
    return ObjectStoreSettings(url=env.get("HARMONY_OBJECT_STORE_URL") or None,
                               endpoint_url=env.get("HARMONY_OBJECT_STORE_ENDPOINT_URL") or None,
                               region=env.get("HARMONY_OBJECT_STORE_REGION") or None)


def open_object_store(settings: ObjectStoreSettings | None = None, data_dir: str | None = None) -> ObjectStore:
    """The configured store: ``s3://...`` is a bucket, a path (or ``file://`` URL) a directory;
    nothing configured: ``<data dir>/objects``."""
    from services.store.paths import data_dir as default_data_dir

    url = settings.url if settings else None
    if not url:
        return DirectoryObjectStore(default_data_dir(data_dir) / "objects")
    if url.startswith("s3://"):
        assert settings is not None
        return S3ObjectStore(url, settings.endpoint_url, settings.region)
    if url.startswith("file://"):
        url = urlparse(url).path
    return DirectoryObjectStore(url)


def missing_required_store(settings: ObjectStoreSettings, what: str) -> str | None:
    """A message when no object store is configured but one is required ($HARMONY_OBJECT_STORE_REQUIRED, which
    Kubernetes pods get: a directory there is the pod's own emptyDir, lost with it and unseen by other replicas)."""
    if settings.url or os.environ.get("HARMONY_OBJECT_STORE_REQUIRED", "").lower() not in ("1", "true"):
        return None
    return (f"{what} need an object store that outlives this pod: set voices.objectStore.url in the Helm chart "
            "($HARMONY_OBJECT_STORE_URL, e.g. s3://bucket/harmony)")
