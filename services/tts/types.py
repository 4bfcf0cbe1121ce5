"""Typed boundary of the TTS service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
from pydantic import BaseModel


@dataclass
class SynthJob:
    """One sentence of one request: the unit the batcher batches."""

    text: str
    voice: str          # the backend's own voice id
    language: str       # ISO 639-1 code (or espeak-ng language id)
    speed: float = 1.0  # 0.25 .. 4.0, 1.0 = the voice's natural pace


class VoiceInfo(BaseModel):
    """A voice as the API lists it."""

    id: str                    # public voice id, unique across the engine
    name: str
    model: str                 # the SpeechModel that speaks it
    backend: str
    languages: list[str]
    sample_rate: int
    backend_voice: str         # the id the backend itself uses
    neural: bool = True


class TtsBackend(Protocol):
    name: str
    task: str
    sample_rate: int

    def load(self) -> None: ...

    def voices(self) -> list[VoiceInfo]: ...

    def run_batch(self, jobs: Sequence[SynthJob]) -> list[np.ndarray]:
        """Mono float32 audio at ``sample_rate`` for every job, in order."""
        ...
