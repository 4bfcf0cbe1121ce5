"""Typed boundary of the STT service: what a chunk job is, what comes back, what the service answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel

SAMPLE_RATE = 16000
WINDOW_SECONDS = 30.0

SttTask = Literal["transcribe", "translate"]


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


class Word(BaseModel):
    word: str
    start: float
    end: float
    probability: float = 0.0


class Segment(BaseModel):
    id: int = 0
    seek: int = 0
    start: float
    end: float
    text: str
    tokens: list[int] = []
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    words: list[Word] | None = None


@dataclass
class ChunkResult:
    language: str
    language_probability: float
    segments: list[Segment] = field(default_factory=list)


class TranscriptionResult(BaseModel):
    """What the STT service answers; the router renders it in the requested response_format."""

    model: str
    task: SttTask
    language: str
    language_probability: float
    duration: float
    text: str
    segments: list[Segment]
    words: list[Word] | None = None
