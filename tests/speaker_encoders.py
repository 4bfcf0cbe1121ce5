"""Speech for the speaker encoders' tests (Piper at 16 kHz), and how alike two embeddings are."""

from __future__ import annotations

import numpy as np

from services.core.audio import resample
from tests.speech import SENTENCES, synthesize

SAMPLE_RATE = 16000  # both speaker encoders take 16-kHz audio


def piper16(text: str) -> np.ndarray:
    audio, rate = synthesize(text)
    return resample(audio, rate, SAMPLE_RATE)


def speech_clips(short_seconds: float) -> list[np.ndarray]:
    """Piper speech of different lengths: the first sentence cut to ``short_seconds``, ~2.8 s and ~3.7 s."""
    first, second = piper16(SENTENCES[0]), piper16(SENTENCES[1])
    return [first[: int(short_seconds * SAMPLE_RATE)], first, second]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
