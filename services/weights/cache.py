"""The model cache: content-addressed, atomic, safe to share between processes and pods.

Layout under the root (``$HARMONY_CACHE_DIR``, else ``$XDG_CACHE_HOME/harmony`` or ``~/.cache/harmony``; in a
cluster a volume shared by the model pods)::

    blobs/sha256/<hex>                  every fetched file once, named by its SHA-256, never changed
    models/<kind>/<slug>/<version>/     a model as its backend reads it: hard links to the blobs (relative
                                        symlinks where the file system has no hard links) and
                                        ``.harmony-model.json`` (what it is, its files and their digests)
    plans/<kind>/<slug>/<version>.json  the files a model needs, written once its source is resolved: offline
                                        mode names the missing ones from it
    refs/hf/<org>--<name>/<revision>    the commit a branch or tag resolved to (offline mode reads it)
    index/<key>                         the SHA-256 of a file known by another name (a Hub file's git blob id)
    downloads/<key>.part                a download under way (resumed from its length), ``.part.json`` beside
    locks/<key>.lock                    advisory locks (flock): one download of a file, one build of a model

A model directory is built beside its final name and renamed into place, so a reader sees all of it or
nothing. Two models that share a file share its blob.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from services.core.runtime.weights import WeightsError, cache_dir

MANIFEST = ".harmony-model.json"


class CachedFile(BaseModel):
    path: str = Field(..., description="relative path inside the model directory")
    size: int
    sha256: str


class ModelManifest(BaseModel):
    """What a model directory of the cache holds (``.harmony-model.json``)."""

    source: str = Field(..., description="the source, credentials and query strings removed")
    kind: str
    revision: str | None = None
    files: list[CachedFile]
    main: str | None = Field(None, description="the file a backend should open when the source is one file")
    fetched_at: float = Field(default_factory=time.time)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def slug(text: str) -> str:
    """A file-name-safe form of a repository id or a key (``org/name`` -> ``org--name``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.replace("/", "--")).strip("-")[:120] or "model"


def short_hash(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ModelCache:
    """One cache root. Every method is safe to call from several processes at once."""

    root: Path

    @classmethod
    def default(cls) -> ModelCache:
        return cls(cache_dir())

    # paths
    def blob(self, sha256: str) -> Path:
        return self.root / "blobs" / "sha256" / sha256

    def model_dir(self, kind: str, name: str, version: str) -> Path:
        return self.root / "models" / kind / slug(name) / version

    def plan_path(self, kind: str, name: str, version: str) -> Path:
        return self.root / "plans" / kind / slug(name) / f"{version}.json"

    def ref_path(self, repo: str, revision: str) -> Path:
        return self.root / "refs" / "hf" / slug(repo) / slug(revision)

    def partial(self, key: str) -> Path:
        return self._dir("downloads") / f"{key}.part"

    def lock_path(self, key: str) -> Path:
        return self._dir("locks") / f"{key}.lock"

    def _dir(self, name: str) -> Path:
        path = self.root / name
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise unwritable(self.root, exc) from None
        return path

    # locks
    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """An exclusive advisory lock shared by every process (and pod) using this cache; blocks until free."""
        with open(self.lock_path(key), "a+") as handle:
            with contextlib.suppress(OSError):  # a file system without locks: no lock (documented)
                fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    # refs (hf branch or tag -> commit)
    def read_ref(self, repo: str, revision: str) -> str | None:
        try:
            return self.ref_path(repo, revision).read_text().strip() or None
        except OSError:
            return None

    def write_ref(self, repo: str, revision: str, commit: str) -> None:
        """Kept for offline use; a read-only cache (a ReadOnlyMany volume filled elsewhere) keeps none."""
        with contextlib.suppress(OSError):
            write_atomic(self.ref_path(repo, revision), commit + "\n")

    # plans (the files a resolved model needs)
    def read_plan(self, kind: str, name: str, version: str) -> dict | None:
        try:
            return json.loads(self.plan_path(kind, name, version).read_text())
        except (OSError, ValueError):
            return None

    def write_plan(self, kind: str, name: str, version: str, plan: dict) -> None:
        with contextlib.suppress(OSError):  # only ever a better message later
            write_atomic(self.plan_path(kind, name, version), json.dumps(plan, indent=1))

    # the SHA-256 of a file known by another name (a Hub file's git blob id, a URL): ``index/<key>``
    def known_sha256(self, key: str) -> str | None:
        try:
            digest = (self.root / "index" / key).read_text().strip()
        except OSError:
            return None
        return digest if self.has_blob(digest) else None

    def remember_sha256(self, key: str, sha256: str) -> None:
        write_atomic(self.root / "index" / key, sha256 + "\n")

    # blobs
    def has_blob(self, sha256: str) -> bool:
        return self.blob(sha256).is_file()

    def add_blob(self, file: Path, sha256: str) -> Path:
        """Move a verified file into the blob store (a blob already there wins: same bytes)."""
        target = self.blob(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            file.unlink(missing_ok=True)
        else:
            os.chmod(file, 0o444)
            os.replace(file, target)
        return target

    # models
    def find(self, kind: str, name: str, version: str) -> ModelManifest | None:
        path = self.model_dir(kind, name, version) / MANIFEST
        try:
            return ModelManifest.model_validate_json(path.read_text())
        except (OSError, ValueError):
            return None

    def build(self, kind: str, name: str, version: str, manifest: ModelManifest) -> Path:
        """Lay the model directory out from its blobs beside its final name and rename it into place."""
        final = self.model_dir(kind, name, version)
        if (final / MANIFEST).exists():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{version}."))
        try:
            for item in manifest.files:
                dest = staging / item.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                _link(self.blob(item.sha256), dest)
            (staging / MANIFEST).write_text(manifest.model_dump_json(indent=1))
            os.chmod(staging, 0o755)
            try:
                os.rename(staging, final)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                # another process finished it first: theirs is complete (it has its manifest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final

    def models(self) -> list[tuple[Path, ModelManifest]]:
        """Every complete model directory in the cache, with its manifest."""
        out = []
        for manifest_path in sorted((self.root / "models").glob(f"*/*/*/{MANIFEST}")):
            try:
                out.append((manifest_path.parent, ModelManifest.model_validate_json(manifest_path.read_text())))
            except (OSError, ValueError):
                continue
        return out

    def blob_bytes(self) -> int:
        """Bytes the blob store holds (what the cache really takes on disk, the models' links aside)."""
        return sum(p.stat().st_size for p in (self.root / "blobs" / "sha256").glob("*") if p.is_file())


def _link(blob: Path, dest: Path) -> None:
    try:
        os.link(blob, dest)
    except OSError:  # no hard links here (some network file systems): a relative symlink inside the cache
        os.symlink(os.path.relpath(blob, dest.parent), dest)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def unwritable(root: Path, exc: OSError) -> WeightsError:
    return WeightsError(f"the model cache {root} is not writable ({exc.strerror or exc}): a read-only cache must "
                        "already hold the model; fill it once with `harmony pull` where it is writable")
