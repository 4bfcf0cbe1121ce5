"""In-process types of the TTS service: a sentence job (what crosses HTTP is in core/wire.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SynthJob:
    """One sentence of one request: the unit the batcher batches."""

    text: str
    voice: str          # the backend's own voice id
    language: str       # ISO 639-1 code (or espeak-ng language id)
    speed: float = 1.0  # 0.25 .. 4.0, 1.0 = the voice's natural pace
