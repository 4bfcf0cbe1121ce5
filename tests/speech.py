"""Speech with known words, made by the tests themselves (Piper, en_US-joe-medium), and word error rate.

Both synthesizers sample (VITS draws its durations and sound; espeak-ng varies its
speech), so the test speech comes from seeded engines: one text, one waveform, in
every run, in any order of tests.
"""

from __future__ import annotations

import functools
import io
import re
import wave
from pathlib import Path

import numpy as np

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Every morning the baker opens his small shop near the station.",
    "A journey of a thousand miles begins with a single step.",
    "The weather today is cold and rainy, so take an umbrella with you.",
    "Our engineers measure speed and memory on every release.",
]

# German that Whisper base hears and translates reliably from espeak-ng (at 150 words per minute, with any
# espeak seed we tried, >= 5 of these German words and >= 4 of these English ones). Words espeak blurs, such as
# "Wetter ist heute", are avoided: Whisper heard them as "Metastheuternier".
GERMAN = "Guten Abend. Ich trinke gern Kaffee mit Milch und esse ein Stück Kuchen."
GERMAN_WORDS = {"guten", "abend", "trinke", "kaffee", "milch", "kuchen"}
GERMAN_IN_ENGLISH = {"good", "evening", "drink", "coffee", "milk", "cake"}


@functools.lru_cache(maxsize=64)
def synthesize(text: str) -> tuple[np.ndarray, int]:
    """Speech for ``text`` as mono float32 at its peak, and its sample rate (22050 Hz); always the same."""
    from services.core.tasks.jobs import SynthJob
    from tests import models

    piper = models.piper_joe()  # seeded
    audio = piper.run_batch([SynthJob(text, "joe", "en")])[0]
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return (audio / peak if peak > 0 else audio).astype(np.float32), piper.sample_rate


def silence(seconds: float, rate: int) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.float32)


def loud_span(audio: np.ndarray, rate: int) -> tuple[float, float]:
    """Start and end (seconds) of the first and last 10-ms frame above -40 dBFS."""
    hop = rate // 100
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    level = 20 * np.log10(np.sqrt((frames ** 2).mean(axis=1)) + 1e-10)
    loud = np.flatnonzero(level > -40)
    return loud[0] * hop / rate, (loud[-1] + 1) * hop / rate


def speech_with_pauses(texts: list[str], pause_s: float = 0.7) -> tuple[np.ndarray, int]:
    parts, rate = [], 22050
    for text in texts:
        audio, rate = synthesize(text)
        parts += [audio, silence(pause_s, rate)]
    return np.concatenate(parts), rate


def wav_bytes(audio: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def write_wav(path: Path, audio: np.ndarray, rate: int) -> Path:
    path.write_bytes(wav_bytes(audio, rate))
    return path


_NUMBERS = {"1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "10": "ten", "1000": "thousand"}


def normalize(text: str) -> list[str]:
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^\w' ]+", " ", text)
    return [_NUMBERS.get(w, w) for w in text.split()]


def edit_distance(reference: list, hypothesis: list) -> int:
    """Levenshtein distance between two token sequences."""
    previous = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        current = [i] + [0] * len(hypothesis)
        for j, h in enumerate(hypothesis, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance over the reference length."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        return float(bool(hyp))
    return edit_distance(ref, hyp) / len(ref)


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate, ignoring spaces and punctuation (for Japanese and Chinese)."""
    strip = functools.partial(re.sub, r"[\s、。，．,.!?！？「」]", "")
    ref, hyp = list(strip(reference)), list(strip(hypothesis))
    return edit_distance(ref, hyp) / max(1, len(ref))


def espeak(text: str, language: str) -> tuple[np.ndarray, int]:
    """Speech in any espeak-ng language (robotic, but Whisper understands it)."""
    from services.tts.espeak_engine import EspeakEngine
    from tests.models import SEED

    engine = EspeakEngine.get()
    return engine.synthesize(text, language, words_per_minute=150, seed=SEED), engine.sample_rate


def white_noise(seconds: float, rate: int = 16000, level: float = 0.05, seed: int = 0) -> np.ndarray:
    """Gaussian white noise at ``level`` RMS; the same samples for the same seed."""
    return (np.random.default_rng(seed).standard_normal(int(seconds * rate)) * level).astype(np.float32)


def narrowband_noise(seconds: float, rate: int = 8000, peak: float = 0.6, seed: int = 0) -> np.ndarray:
    """What a GSM call carries when nobody speaks: noise in the telephone band (300-3400 Hz) at 8 kHz."""
    noise = np.random.default_rng(seed).standard_normal(int(seconds * rate))
    spectrum = np.fft.rfft(noise)
    freqs = np.fft.rfftfreq(len(noise), 1 / rate)
    spectrum[(freqs < 300) | (freqs > 3400)] = 0
    band = np.fft.irfft(spectrum, len(noise))
    return (band / np.abs(band).max() * peak).astype(np.float32)
