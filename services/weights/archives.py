"""Archives of weights (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``, ``.zip``) unpacked safely.

Only regular files and folders come out: a member that would land outside the target (an absolute path, ``..``,
a link) is refused, as are devices and links themselves. A lone top-level folder is stripped (``model/...`` ->
``...``), so an archive made with ``tar czf model.tgz model/`` gives the same layout as one made inside it.

``apply_layer`` lays a container image's layer (a tar, compressed or not) over a root folder: its whiteouts
(``.wh.<name>``, ``.wh..wh..opq``) delete what lower layers put there; its files and folders are written with the
same checks; its links and devices, a base image's system files, are not written but named, so that the caller
refuses them where it takes its files from.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from services.core.runtime.weights import WeightsError

SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")


def is_archive(name: str) -> bool:
    return name.lower().endswith(SUFFIXES)


def unpack(archive: Path, target: Path, label: str) -> list[str]:
    """Unpack ``archive`` into the empty folder ``target``; the relative paths of its files."""
    try:
        if zipfile.is_zipfile(archive):
            _unzip(archive, target, label)
        else:
            with tarfile.open(archive) as tar:
                for member in tar.getmembers():
                    if member.isdir():
                        continue
                    if not member.isfile():
                        raise WeightsError(f"{label}: archive member '{member.name}' is a link or device; refused")
                    _safe(member.name, label)
                tar.extractall(target, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise WeightsError(f"{label}: not a readable archive ({exc})") from None
    _strip_single_folder(target)
    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    if not files:
        raise WeightsError(f"{label}: the archive holds no files")
    return files


WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


def apply_layer(layer: Path, root: Path, label: str, skip: frozenset[str] = frozenset()) -> list[str]:
    """Apply the image layer ``layer`` to the folder ``root`` (read as one stream, never whole into memory): the
    paths of the links and devices it holds, which are not written. Members under a top-level folder in ``skip``
    are ignored."""
    skipped: list[str] = []
    written: set[str] = set()  # this layer's own paths and their folders: a whiteout hides lower layers only
    try:
        with tarfile.open(layer, mode="r|*") as tar:
            for member in tar:
                if member.isdir() and not PurePosixPath(member.name).parts:
                    continue  # the layer's "./"
                name = _safe(member.name, label)
                path = PurePosixPath(name)
                if path.parts[0] in skip:
                    continue
                dest = root / name
                if path.name == OPAQUE:  # the folder's entries from lower layers are gone
                    if dest.parent.is_dir():
                        for child in list(dest.parent.iterdir()):
                            if child.relative_to(root).as_posix() not in written:
                                _remove(child)
                    continue
                written.update([name, *(p.as_posix() for p in path.parents if p.parts)])
                if path.name.startswith(WHITEOUT):
                    _remove(dest.parent / path.name[len(WHITEOUT):])
                elif member.isdir():
                    if dest.exists() and not dest.is_dir():
                        _remove(dest)
                    dest.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    _remove(dest)
                    tar.extract(member, root, filter="data")
                else:
                    _remove(dest)
                    skipped.append(name)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise WeightsError(f"{label}: cannot apply the image layer ({exc})") from None
    return skipped


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def safe_name(name: str, label: str) -> str:
    """``name`` as a relative path that stays inside its folder, else a WeightsError."""
    return _safe(name, label)


def _unzip(archive: Path, target: Path, label: str) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise WeightsError(f"{label}: archive member '{info.filename}' is a link; refused")
            dest = target / _safe(info.filename, label)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)


def _safe(name: str, label: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise WeightsError(f"{label}: archive member '{name}' points outside the archive; refused")
    return path.as_posix()


def _strip_single_folder(target: Path) -> None:
    entries = list(target.iterdir())
    if len(entries) == 1 and entries[0].is_dir():
        inner = entries[0].rename(target / ".harmony-unpacked")
        for child in list(inner.iterdir()):
            os.replace(child, target / child.name)
        inner.rmdir()
