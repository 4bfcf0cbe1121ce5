"""A two-speaker meeting made with the engine's own voices (Piper joe and espeak-ng, seeded) taking turns, for the
diarization tests (tests/e2e/test_diarization.py through the API, tests/e2e/test_playground_diarize.py in a browser).
"""

from __future__ import annotations

import functools

import numpy as np

from services.core.audio import resample
from services.core.tasks.jobs import SynthJob
from tests import models
from tests.speech import SENTENCES, silence, synthesize, wav_bytes

RATE = 22050
# four turns: joe, espeak, joe, espeak (each turn one sentence)
TURNS = [("joe", SENTENCES[0]), ("espeak", SENTENCES[1]), ("joe", SENTENCES[2]), ("espeak", SENTENCES[3])]

Turn = tuple[str, float, float, str]  # speaker, start, end, text

_ENGINE: list = []


def _espeak_engine():
    if not _ENGINE:
        _ENGINE.append(models.espeak_ng())
    return _ENGINE[0]


def espeak(text: str) -> np.ndarray:
    """espeak-ng's English at RATE, peak-normalized."""
    engine = _espeak_engine()
    audio = engine.run_batch([SynthJob(text, "en", "en")])[0]
    audio = resample(audio, engine.sample_rate, RATE) if engine.sample_rate != RATE else audio
    return (audio / max(float(np.max(np.abs(audio))), 1e-6)).astype(np.float32)


def voice(who: str, text: str) -> np.ndarray:
    """``text`` in Piper's joe (``who == "joe"``) or espeak-ng's voice, at RATE."""
    return synthesize(text)[0] if who == "joe" else espeak(text)


@functools.cache
def two_speaker_meeting() -> tuple[bytes, list[Turn]]:
    """The meeting's WAV and its turns (speaker, start, end, text): 0.5 s of silence, then TURNS with 0.8 s after
    each. Made once per process, before espeak-ng speaks anything else (its engine's output depends on what it
    said before), so every test module gets the same meeting whatever order they run in."""
    parts, turns, at = [silence(0.5, RATE)], [], 0.5
    for who, text in TURNS:
        audio = voice(who, text)
        turns.append((who, at, at + len(audio) / RATE, text))
        parts += [audio, silence(0.8, RATE)]
        at += len(audio) / RATE + 0.8
    return wav_bytes(np.concatenate(parts), RATE), turns
