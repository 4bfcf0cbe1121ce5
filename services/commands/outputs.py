"""Where results go, and how they are written so that a file that exists is complete.

Each result is written to a hidden temporary file beside its destination and renamed into place only once it
is whole; an interrupted run leaves no half-written result, so a second run redoes exactly the missing ones.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from services.commands.inputs import Input


def partial_path(destination: Path) -> Path:
    return destination.with_name(f".{destination.name}.part")


def write_atomically(destination: Path, data: bytes) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(destination)
    partial.write_bytes(data)
    os.replace(partial, destination)


async def stream_atomically(destination: Path, chunks: AsyncIterator[bytes]) -> int:
    """Write ``chunks`` to ``destination`` (through a temporary file); returns the bytes written."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(destination)
    size = 0
    try:
        with open(partial, "wb") as out:
            async for chunk in chunks:
                out.write(chunk)
                size += len(chunk)
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)
    return size


def output_paths(inputs: Iterable[Input], extension: str, out_dir: Path | None) -> dict[Input, Path]:
    """Each input's result: beside it (``episode.mp3`` -> ``episode.srt``) or under ``out_dir`` at its relative
    path. Inputs that would share a result (``talk.mp3`` and ``talk.wav``) keep their own extension in its name
    (``talk.mp3.srt``, ``talk.wav.srt``)."""
    inputs = list(inputs)

    def place(item: Input, name: str) -> Path:
        folder = (out_dir / item.relative).parent if out_dir is not None else item.path.parent
        return folder / name

    plain = {item: place(item, item.path.stem + extension) for item in inputs}
    counts = Counter(path.resolve() for path in plain.values())
    return {item: plain[item] if counts[plain[item].resolve()] == 1 else place(item, item.path.name + extension)
            for item in inputs}
