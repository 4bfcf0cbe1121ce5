"""In-process types of the STT service: a window job and its result (what crosses HTTP is in core/wire.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from services.core.contracts.wire import Segment, SttTask

SAMPLE_RATE = 16000
WINDOW_SECONDS = 30.0


@dataclass
class ChunkJob:
    """One window of at most 30 s of one request; the unit the batcher batches."""

    audio: np.ndarray
    offset: float
    task: SttTask = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    fit_context: bool = False  # encoded over its own length, not a padded 30 s (backends may ignore it)


@dataclass
class ChunkResult:
    language: str
    language_probability: float
    segments: list[Segment] = field(default_factory=list)
    packed: bool = False        # decoded inside a packed window with other requests' windows (stt/packing.py)
    pack_failed: bool = False   # was packed, but its share could not be told apart: decoded again alone
