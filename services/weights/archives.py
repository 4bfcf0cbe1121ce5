"""Archives of weights (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``, ``.zip``) unpacked safely.

Only regular files and folders come out: a member that would land outside the target (an absolute path, ``..``,
a link) is refused, as are devices and links themselves. A lone top-level folder is stripped (``model/...`` ->
``...``), so an archive made with ``tar czf model.tgz model/`` gives the same layout as one made inside it.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from services.core.weights import WeightsError

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
