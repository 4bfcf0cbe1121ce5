"""One file fetched into the cache's blob store: resumable, verified, once.

A download writes ``downloads/<key>.part`` under the lock ``locks/<key>.lock``: a second process (or pod) that
wants the same file waits on the lock and then finds the blob. A download that stops (a dropped connection, a
killed process) keeps its ``.part`` file; the next attempt asks for the rest (an HTTP ``Range``, or S3's) and
checks that the remote file is still the same one (its ETag, kept in ``.part.json``), else starts over. The
bytes are hashed as they arrive; only a file of the expected size and digest (SHA-256, and for a Hub file
that is no LFS object its git blob id) becomes a blob.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from services.core.runtime.weights import WeightsError
from services.weights.cache import ModelCache, write_atomic

log = logging.getLogger("harmony.weights")

CHUNK = 1 << 20
ATTEMPTS = 5  # tries of one file, each resuming where the last stopped ($HARMONY_DOWNLOAD_ATTEMPTS)


def attempts() -> int:
    try:
        return max(1, int(os.environ.get("HARMONY_DOWNLOAD_ATTEMPTS", ATTEMPTS)))
    except ValueError:
        return ATTEMPTS


class ChecksumMismatch(WeightsError):
    default_code = "checksum_mismatch"


class TransientError(Exception):
    """A failure worth another try from where the download stopped (a dropped connection, a 5xx)."""


@dataclass(frozen=True)
class RemoteStat:
    size: int | None
    etag: str | None


class Remote(Protocol):
    """A file somewhere that can be read from an offset."""

    label: str  # for messages: no credentials, no query string

    def stat(self) -> RemoteStat: ...

    def read(self, offset: int, etag: str | None) -> tuple[int, Iterator[bytes]]:
        """The file's bytes from ``offset`` (returns the offset the answer really starts at: 0 when the server
        ignored the range or the file changed since ``etag``)."""
        ...


@dataclass(frozen=True)
class Expected:
    size: int | None = None
    sha256: str | None = None
    git_sha1: str | None = None  # a Hub file stored in git (no LFS): its blob id
    sha256_from_user: bool = False  # the figure is source.sha256 (named as such in a mismatch)


Progress = Callable[[int], None]  # bytes added since the last call


def fetch_blob(cache: ModelCache, key: str, remote: Remote, expected: Expected, progress: Progress,
               stat: RemoteStat | None = None) -> str:
    """The SHA-256 of the file, now a blob of ``cache``; downloaded unless the blob is there already (its
    ``expected.sha256``, or the digest an earlier download of ``key`` gave). ``stat``: the remote's, when the
    caller asked for it already (the first try uses it; a retry asks again, the file may have changed)."""
    if found := _cached(cache, key, expected, progress):
        return found
    with cache.locked(key):
        if found := _cached(cache, key, expected, progress):  # another process fetched it meanwhile
            return found
        tries = attempts()
        for attempt in range(1, tries + 1):
            try:
                digest = _download(cache, key, remote, expected, progress, stat if attempt == 1 else None)
                cache.remember_sha256(key, digest)
                return digest
            except TransientError as exc:
                if attempt == tries:
                    raise WeightsError(f"{remote.label}: download failed {tries} times ({exc}); what arrived is "
                                       "kept and the next try resumes from there") from None
                log.warning("%s: %s; resuming (attempt %d of %d)", remote.label, exc, attempt + 1, tries)
                time.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
    raise AssertionError("unreachable")


def _cached(cache: ModelCache, key: str, expected: Expected, progress: Progress) -> str | None:
    digest = expected.sha256 if expected.sha256 and cache.has_blob(expected.sha256) else None
    if digest is None and not expected.sha256_from_user:
        digest = cache.known_sha256(key)
    if digest:
        progress(expected.size or cache.blob(digest).stat().st_size)
    return digest


def _download(cache: ModelCache, key: str, remote: Remote, expected: Expected, progress: Progress,
              stat: RemoteStat | None) -> str:
    part = cache.partial(key)
    meta_path = part.with_name(part.name + ".json")
    stat = stat or remote.stat()
    size = expected.size if expected.size is not None else stat.size
    if stat.size is not None and expected.size is not None and stat.size != expected.size:
        raise WeightsError(f"{remote.label} is {stat.size} bytes where {expected.size} were expected")
    have = _resumable_length(part, meta_path, stat)
    sha256, sha1 = hashlib.sha256(), hashlib.sha1()
    if expected.git_sha1 and size is not None:
        sha1.update(b"blob %d\0" % size)
    if have:
        _hash_existing(part, have, sha256, sha1)
        progress(have)
    write_atomic(meta_path, json.dumps({"label": remote.label, "etag": stat.etag, "size": size}))
    start, chunks = remote.read(have, stat.etag)
    if start != have:  # the server sent the whole file: begin again
        progress(-have)
        have, sha256, sha1 = 0, hashlib.sha256(), hashlib.sha1()
        if expected.git_sha1 and size is not None:
            sha1.update(b"blob %d\0" % size)
    with open(part, "r+b" if have else "wb") as out:
        out.seek(have)
        out.truncate()
        try:
            for chunk in chunks:
                out.write(chunk)
                sha256.update(chunk)
                sha1.update(chunk)
                have += len(chunk)
                progress(len(chunk))
        finally:
            out.flush()
            os.fsync(out.fileno())
    if size is not None and have != size:
        raise TransientError(f"got {have} of {size} bytes")
    return _verify_and_store(cache, part, meta_path, remote, expected, sha256.hexdigest(), sha1.hexdigest())


def _verify_and_store(cache: ModelCache, part: Path, meta_path: Path, remote: Remote, expected: Expected,
                      sha256: str, sha1: str) -> str:
    problem = None
    if expected.sha256 and sha256 != expected.sha256:
        what = "source.sha256" if expected.sha256_from_user else "the SHA-256 its source publishes"
        problem = f"{remote.label} has SHA-256 {sha256}, but {what} is {expected.sha256}"
    elif expected.git_sha1 and sha1 != expected.git_sha1:
        problem = f"{remote.label} has git blob id {sha1}, but the repository says {expected.git_sha1}"
    if problem:
        part.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        raise ChecksumMismatch(problem)
    cache.add_blob(part, sha256)
    meta_path.unlink(missing_ok=True)
    return sha256


def _resumable_length(part: Path, meta_path: Path, stat: RemoteStat) -> int:
    """Bytes of an earlier attempt worth keeping: the same remote file (ETag), not longer than it."""
    try:
        have = part.stat().st_size
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return 0
    if not have or meta.get("etag") != stat.etag or (stat.size is not None and have > stat.size):
        return 0
    return have


def _hash_existing(part: Path, length: int, *digests) -> None:
    with open(part, "rb") as handle:
        left = length
        while left and (chunk := handle.read(min(CHUNK, left))):
            for digest in digests:
                digest.update(chunk)
            left -= len(chunk)
