"""The items a batch carries to a backend and what comes back: one job type per task, in-process only.

What crosses HTTP is in services/core/contracts/wire.py; these are what a service hands
its batcher once a request is decoded, and what the task protocols
(services/core/tasks/protocols.py) type ``run_batch`` with. VAD and speaker-embedding
batches carry plain mono float32 arrays; a live VAD stream's frames carry their state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.core.contracts.wire import Segment, SttTask

# ---------------------------------------------------------------------------- speech-to-text


@dataclass
class ChunkJob:
    """One window of at most 30 s of 16-kHz audio of one request; the unit the STT batcher batches."""

    audio: np.ndarray
    offset: float
    task: SttTask = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    fit_context: bool = False  # encoded over its own length, not a padded 30 s (backends may ignore it)
    logprobs: bool = False  # each segment's text tokens with their log-probabilities
    languages: tuple[str, ...] | None = None  # detection (no ``language``) picks among these only


@dataclass
class ChunkResult:
    """A window's transcript: its language and its segments (times within the window plus its offset)."""

    language: str
    language_probability: float
    segments: list[Segment] = field(default_factory=list)
    packed: bool = False        # decoded inside a packed window with other requests' windows (stt/packing.py)
    pack_failed: bool = False   # was packed, but its share could not be told apart: decoded again alone
    fallbacks: list[str] = field(default_factory=list)  # why Whisper's guards decoded it again (stt/guards.py)


# ---------------------------------------------------------------------------- text-to-speech


@dataclass
class SynthJob:
    """One sentence of one request: the unit the TTS batcher batches."""

    text: str
    voice: str          # the backend's own voice id
    language: str       # ISO 639-1 code (or espeak-ng language id)
    speed: float = 1.0  # 0.25 .. 4.0, 1.0 = the voice's natural pace


# ---------------------------------------------------------------------------- voice activity


@dataclass
class VadContinuation:
    """The next whole frames of a live stream and the recurrent state its previous frames left (None at the start):
    an item of a VAD batch beside whole utterances, for a streaming backend (``StreamingVadBackend``)."""

    audio: np.ndarray
    state: np.ndarray | None = None


@dataclass
class VadContinued:
    """A ``VadContinuation``'s answer: one probability per frame, and the state to send with the next frames."""

    probs: np.ndarray
    state: np.ndarray


# ---------------------------------------------------------------------------- voice conversion


@dataclass
class ConversionJob:
    """Convert ``audio`` (mono float32 at ``sample_rate``) toward a target speaker.

    ``target`` holds the converter's own speaker statistics of the target (for the
    WORLD converter, ``services.vc.stats.SpeakerStats``); the output keeps ``sample_rate``.
    """

    audio: np.ndarray
    sample_rate: int
    target: Any


# ---------------------------------------------------------------------------- speaker embedding over windows


@dataclass
class WindowsJob:
    """Speaker embeddings of ``audio``'s sliding windows (mono float32 at the encoder's rate), one every
    ``step_s`` seconds (diarization); the answer is a ``WindowEmbeddings``."""

    audio: np.ndarray
    step_s: float


@dataclass
class WindowEmbeddings:
    """One unit-length embedding per window (``embeddings``: [n, size]) and each window's start and end in
    seconds of the job's audio (the last window may reach past its end: it was padded)."""

    starts: np.ndarray
    ends: np.ndarray
    embeddings: np.ndarray

