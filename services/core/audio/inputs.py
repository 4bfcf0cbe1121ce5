"""What a decoder reads: a path, bytes or a binary file object, opened as (its first four bytes, a function that gives
a fresh decoder input on each call). Bytes and file objects never touch the file system."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any, BinaryIO

from services.core.contracts.errors import InvalidAudio


def _path_input(data: str | os.PathLike) -> tuple[bytes, Callable[[], Any]]:
    """(first four bytes, a function giving the decoders their input) for a path.

    Raises InvalidAudio for an empty file; a path that cannot be read raises
    the usual OSError.
    """
    path = os.fspath(data)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if os.path.getsize(path) == 0:
        raise InvalidAudio("The audio file is empty.")
    with open(path, "rb") as fh:
        head = fh.read(4)

    def source():
        return path

    return head, source


def _read_bytes(data: bytes | bytearray | memoryview | BinaryIO) -> bytes:
    """The whole content of a bytes-like object or of a binary file object.

    Raises InvalidAudio for a text-mode file object and for empty input,
    TypeError for anything else.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
    elif hasattr(data, "read"):
        raw = data.read()
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise InvalidAudio("The audio file must be read in binary mode.")
        raw = bytes(raw)
    else:
        raise TypeError(f"decode_audio() cannot read {type(data).__name__}")
    if not raw:
        raise InvalidAudio("The audio file is empty.")
    return raw


def open_input(data: bytes | str | os.PathLike | BinaryIO) -> tuple[bytes, Callable[[], Any]]:
    """(first four bytes, a function giving a fresh decoder input on each call)
    for a path, bytes or a binary file object; see ``_path_input`` and
    ``_read_bytes`` for the errors. Bytes and file objects never touch the
    file system.
    """
    if isinstance(data, (str, os.PathLike)):
        return _path_input(data)
    raw = _read_bytes(data)

    def source():
        return io.BytesIO(raw)

    return raw[:4], source
