"""A request's audio seconds estimated before its work is computed: what its quota hold reserves (``quota.py``).

Speech in: the recording's length as its container states it (libsndfile's frame count, else FFmpeg's stated
duration; nothing is decoded, so the router stays light), with a small margin, and never past the model's limit;
a recording whose header says nothing holds the model's whole limit. The model service is told to decode no more
than the hold covers (``max_audio_seconds``), so a header that understates its recording cannot be charged past
its hold: the router holds the rest and sends it again (``covered``).

Speech out: characters at a slow reading pace (``CHARS_PER_SECOND`` at speed 1), a letter of a syllabic or
ideographic script, a digit and a symbol weighing more (they are read as syllables, number words and names), and
each sentence's pause; divided by the request's speed. Synthesis is charged what it made (the audio sent), which
this estimate is meant to exceed: calibrated on the built-in voices (docs/auth.md).
"""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Awaitable, Callable
from typing import TypeVar

from services.core.audio import soundfile_seconds
from services.core.contracts.errors import HarmonyError

HEADER_MARGIN = 1.02       # a header's length, rounded up: resampling and codec padding add a few samples
HEADER_SLACK_S = 0.25
CHARS_PER_SECOND = 12.0    # English at speed 1 is about 14-16 characters a second of speech (Piper, espeak-ng)
WIDE_WEIGHT = 3.0          # kana, hangul, CJK ideographs: about one syllable (or two) each
DIGIT_WEIGHT = 6.0         # "7" is "seven"; "555-1234" may be read digit by digit
SYMBOL_WEIGHT = 10.0       # an emoji or a symbol is read as its name ("grinning face")
SENTENCE_PAUSE_S = 0.3
T = TypeVar("T")


def upload_seconds(data: bytes, limit: float) -> float:
    """Seconds to hold for a recording: its stated length (with a margin), at most ``limit``; ``limit`` when its
    header does not say."""
    stated = soundfile_seconds(data)
    if stated is None:
        stated = _pyav_seconds(data)
    if stated is None:
        return limit
    return min(stated * HEADER_MARGIN + HEADER_SLACK_S, limit)


def _pyav_seconds(data: bytes) -> float | None:
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            duration = container.duration  # microseconds (av.time_base), from the header or the bit rate
    except Exception:  # noqa: BLE001 - not audio: the model service says so when it decodes
        return None
    return duration / 1_000_000 if duration and duration > 0 else None


def speech_seconds(text: str, speed: float = 1.0) -> float:
    """Seconds of speech to hold for synthesizing ``text`` at ``speed`` (an over-estimate, see the module)."""
    weight = 0.0
    pauses = 1
    for char in text:
        category = unicodedata.category(char)
        if char.isspace() or category in ("Cf", "Mn"):
            weight += 1.0 if char.isspace() else 0.0
        elif char in ".!?。！？…":
            pauses += 1
            weight += 1.0
        elif category == "Nd":
            weight += DIGIT_WEIGHT
        elif category.startswith("S"):
            weight += SYMBOL_WEIGHT
        elif unicodedata.east_asian_width(char) in ("W", "F"):
            weight += WIDE_WEIGHT
        else:
            weight += 1.0
    return (weight / CHARS_PER_SECOND + pauses * SENTENCE_PAUSE_S) / max(speed, 0.25)


async def covered(call: Callable[[float | None], Awaitable[T]], held: float | None, limit: float,
                  hold_more: Callable[[float], Awaitable[object]]) -> T:
    """``call(cap)``: the model service decodes at most ``cap`` seconds (the hold), else answers 400
    ``audio_too_long``; then the rest up to the model's ``limit`` is held (``hold_more``, which may refuse: the
    quota is spent) and the recording sent again without a cap. Without a hold (``held`` None), no cap."""
    cap = held if held is not None and held < limit else None
    try:
        return await call(cap)
    except HarmonyError as exc:
        if cap is None or exc.code != "audio_too_long":
            raise
    await hold_more(limit - cap)
    return await call(None)
