"""What the CLI needs to know of a recording before it sends it: its length, and a smaller copy when too big."""

from __future__ import annotations

from pathlib import Path

# Whisper hears 16 kHz mono: a recording larger than the server takes is sent as 16 kHz mono Opus instead
# (about 0.2 MB a minute, so 25 MB holds about two hours), which loses nothing Whisper would use.
TRANSCODE_RATE = 16000


def duration_seconds(path: Path) -> float:
    """The recording's length from its container (PyAV), else from libsndfile; 0.0 when neither knows it."""
    try:
        import av

        with av.open(str(path)) as container:
            streams = container.streams.audio
            if streams and streams[0].duration is not None and streams[0].time_base is not None:
                return float(streams[0].duration * streams[0].time_base)
            if container.duration is not None:
                return container.duration / 1_000_000
    except Exception:  # noqa: BLE001 - any container PyAV cannot open may still be one libsndfile reads
        pass
    try:
        import soundfile

        return float(soundfile.info(str(path)).duration)
    except Exception:  # noqa: BLE001 - unknown length: the bar counts it as zero, the server still decides
        return 0.0


def upload_of(path: Path, max_bytes: int) -> tuple[str, bytes]:
    """The file to send for ``path``: itself when it fits in ``max_bytes``, else its audio as 16 kHz mono Opus
    (video and large recordings alike); raises ValueError when even that does not fit."""
    if path.stat().st_size <= max_bytes:
        return path.name, path.read_bytes()
    from services.core.audio import decode_audio, encode_audio

    data = encode_audio(decode_audio(str(path), TRANSCODE_RATE), TRANSCODE_RATE, "opus")
    if len(data) > max_bytes:
        raise ValueError(f"too large even as 16 kHz Opus ({len(data) / 1e6:.1f} MB > {max_bytes / 1e6:.1f} MB): "
                         "split it, or raise the server's max_upload_bytes and --max-upload-mb")
    return path.stem + ".ogg", data
