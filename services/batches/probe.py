"""How long a piece of audio is, cheaply (headers where they tell it), for a batch's progress in audio seconds."""

from __future__ import annotations

import io

from services.core.audio import soundfile_seconds

UNKNOWN_SIZE = b"\xff\xff\xff\xff"


def fix_streamed_wav(data: bytes) -> bytes:
    """A WAV streamed with "unknown length" sizes (0xFFFFFFFF), given its real sizes now that it is whole."""
    if len(data) >= 44 and data[:4] == b"RIFF" and data[36:40] == b"data" and data[40:44] == UNKNOWN_SIZE:
        size = len(data) - 44
        return b"RIFF" + min(36 + size, 0xFFFFFFFF).to_bytes(4, "little") + data[8:40] + \
            size.to_bytes(4, "little") + data[44:]
    return data


def _pyav_seconds(data: bytes) -> float | None:
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if container.duration:
                return container.duration / 1_000_000  # av.time_base
            stream = next(iter(container.streams.audio), None)
            if stream is None:
                return None
            samples = sum(frame.samples for frame in container.decode(stream))
            return samples / stream.rate if stream.rate else None
    except Exception:  # noqa: BLE001 - not audio: the request itself will say so
        return None


def audio_seconds(data: bytes, fmt: str | None = None, sample_rate: int | None = None) -> float | None:
    """Seconds of audio in ``data`` (any format the engine decodes; raw ``pcm`` needs its rate), or None."""
    if fmt == "pcm":
        return len(data) / 2 / sample_rate if sample_rate else None
    seconds = soundfile_seconds(data)
    return round(seconds if seconds is not None else _pyav_seconds(data) or 0.0, 3) or None
