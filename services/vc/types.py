"""Typed boundary of the voice service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np
from pydantic import BaseModel, Field


@dataclass
class ConversionJob:
    """Convert ``audio`` (mono float32 at ``sample_rate``) toward a target speaker.

    ``target`` holds the converter's own speaker statistics of the target (for the
    WORLD converter, ``services.vc.stats.SpeakerStats``); the output keeps ``sample_rate``.
    """

    audio: np.ndarray
    sample_rate: int
    target: Any


class SpeakerProfile(BaseModel):
    """What a voice is known by: its speaker embedding and the converter's statistics."""

    embedding: list[float] = Field(..., description="speaker embedding (Resemblyzer GE2E: 256 values, unit length)")
    embedding_model: str
    stats: dict[str, Any] = Field(..., description="the converter's speaker statistics (JSON)")
    converter: str = Field(..., description="the converter model whose statistics these are")
    speech_seconds: float


class SpeakerEncoder(Protocol):
    """A speaker-embedding backend: a batch of speech clips -> a batch of unit-length embeddings."""

    name: str
    task: str  # "embed"
    sample_rate: int

    def load(self) -> None: ...

    def run_batch(self, items: Sequence[np.ndarray]) -> list[np.ndarray]: ...


class VoiceConverter(Protocol):
    """A voice-conversion backend. WORLD today; a neural converter fits the same shape."""

    name: str
    task: str  # "vc"

    def load(self) -> None: ...

    def analyze(self, audio: np.ndarray, sample_rate: int) -> dict[str, Any]:
        """Speaker statistics of reference speech, as JSON-able data (what ``ConversionJob.target`` takes)."""
        ...

    def run_batch(self, jobs: Sequence[ConversionJob]) -> list[np.ndarray]: ...
