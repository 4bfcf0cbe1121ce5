"""The model cache: split weights joined once into a directory that several replicas may share."""

from __future__ import annotations

import errno
import hashlib
import multiprocessing
import os
import tempfile
from pathlib import Path

import pytest

from services.core.runtime import weights
from services.core.runtime.weights import WeightsError, join_parts, link_or_copy


def make_parts(tmp_path: Path, sizes=(3_000_000, 2_000_001)) -> tuple[list[Path], str]:
    parts, digest = [], hashlib.sha256()
    for i, size in enumerate(sizes):
        data = os.urandom(size)
        digest.update(data)
        part = tmp_path / f"model.bin.part{i + 1}"
        part.write_bytes(data)
        parts.append(part)
    return parts, digest.hexdigest()


def _join_in_a_process(args) -> int:
    parts, dest, sha = args
    return os.stat(join_parts([Path(p) for p in parts], Path(dest), sha)).st_ino


def test_replicas_sharing_a_cache_join_once(tmp_path):
    """Four processes (the replicas of a model on one ReadWriteMany volume) start at once: one file is joined,
    the others wait on its lock and reuse it (the same inode: a second join would have replaced it)."""
    parts, sha = make_parts(tmp_path)
    dest = tmp_path / "cache" / "whisper-base-ct2" / "model.bin"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        inodes = pool.map(_join_in_a_process, [([str(p) for p in parts], str(dest), sha)] * 4)
    assert len(set(inodes)) == 1 and os.stat(dest).st_ino == inodes[0]
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == sha
    assert not [p for p in dest.parent.iterdir() if p.name.startswith("model.bin.") and p.suffix not in
                (".sha256", ".lock")]  # no temporary file left behind


def test_a_read_only_cache_that_holds_the_weights_is_used(tmp_path, monkeypatch):
    parts, sha = make_parts(tmp_path)
    dest = tmp_path / "cache" / "model.bin"
    join_parts(parts, dest, sha)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(weights, "_exclusive", lambda path: (_ for _ in ()).throw(AssertionError("no lock needed")))
    assert join_parts(parts, dest, sha) == dest  # reused without writing anything


def test_a_read_only_cache_without_the_weights_says_so(tmp_path, monkeypatch):
    parts, sha = make_parts(tmp_path, sizes=(1000, 1000))

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(WeightsError, match="read-only model cache must already hold them"):
        join_parts(parts, tmp_path / "cache" / "model.bin", sha)


def test_a_wrong_join_is_rebuilt_and_a_bad_digest_refused(tmp_path):
    parts, sha = make_parts(tmp_path, sizes=(1000, 1000))
    dest = tmp_path / "cache" / "model.bin"
    join_parts(parts, dest, sha)
    dest.write_bytes(b"truncated")
    assert hashlib.sha256(join_parts(parts, dest, sha).read_bytes()).hexdigest() == sha
    with pytest.raises(WeightsError, match="expected"):
        join_parts(parts, tmp_path / "cache" / "other.bin", "0" * 64)


def test_companion_files_are_copies_not_symlinks_into_one_image(tmp_path):
    src = tmp_path / "site-packages" / "config.json"
    src.parent.mkdir()
    src.write_text('{"a": 1}')
    dest = tmp_path / "cache" / "config.json"
    dest.parent.mkdir()
    dest.symlink_to(tmp_path / "python3.12" / "config.json")  # left by a pod of another image: dangling here
    link_or_copy(src, dest)
    assert not dest.is_symlink() and dest.read_text() == '{"a": 1}'
    link_or_copy(src, dest)  # kept
    assert dest.read_text() == '{"a": 1}'


def test_the_cache_dir_is_configurable(tmp_path, monkeypatch):
    monkeypatch.setenv("HARMONY_CACHE_DIR", str(tmp_path / "shared-cache"))
    assert weights.cache_dir() == tmp_path / "shared-cache" and (tmp_path / "shared-cache").is_dir()
