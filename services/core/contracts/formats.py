"""The audio formats an answer can be encoded in: their names (``response_format``) and content types.

Defined here, where the wire contracts name them, so a contract needs no audio library;
services/core/audio encodes them.
"""

from __future__ import annotations

from typing import Literal, get_args

AudioFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
AUDIO_FORMATS: tuple[AudioFormat, ...] = get_args(AudioFormat)

CONTENT_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",  # opus in an ogg container
    "aac": "audio/aac",  # raw ADTS stream
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",  # raw signed 16-bit little-endian mono, no header
}
