"""espeak-ng: formant synthesis for every language espeak-ng speaks (about 100), so any language gets speech.

libespeak-ng is one global engine per process, so sentences run one after another
under its lock; at a real-time factor near 0.002 that is never the bottleneck.

espeak-ng varies its speech at random. ``options: {seed: N}`` in the model spec
reseeds it before every sentence, so the same text always gives the same audio;
without it (the default) espeak-ng's clock-seeded variation is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from services.core.contracts.specs import NamedModel, Task
from services.core.contracts.wire import VoiceInfo
from services.core.tasks.jobs import SynthJob

if TYPE_CHECKING:
    from services.tts.espeak_engine import EspeakEngine

BASE_WORDS_PER_MINUTE = 175
MIN_WPM, MAX_WPM = 80, 450  # espeak-ng's own limits
# ISO 639-1 codes for espeak-ng languages named otherwise, so that language=zh or no finds them
EXTRA_CODES = {"cmn": ["zh"], "nb": ["no"], "yue": ["zh-yue"]}
# Speech per phoneme and per clause (its pause) at 175 words a minute, measured on English sentences, on
# "A. A. ..." and on emoji names (within 25 %): what ``speech_seconds`` estimates a request's work from
SECONDS_PER_PHONEME = 0.05
SECONDS_PER_CLAUSE = 0.15


class EspeakBackend:
    """espeak-ng formant synthesis: every language it speaks, through libespeak-ng."""

    task = Task.tts
    devices = ("cpu",)

    def __init__(self, spec: NamedModel) -> None:
        self.spec = spec
        self.name = spec.name
        self.engine: EspeakEngine | None = None  # set by load()
        self.sample_rate = 22050
        self._voices: list[VoiceInfo] = []
        seed = spec.options.get("seed")
        self.seed: int | None = None if seed is None else int(seed)

    def load(self) -> None:
        from services.tts.espeak_engine import EspeakEngine

        self.engine = engine = EspeakEngine.get()
        self.sample_rate = engine.sample_rate
        wanted = set(self.spec.languages)
        voices: dict[str, VoiceInfo] = {}
        for identifier, language in engine.voices():
            short = identifier.rsplit("/", 1)[-1].lower()  # "roa/fr" -> "fr", "gmw/en-US" -> "en-us"
            language = language.lower()
            codes = list(dict.fromkeys([short, language, short.split("-")[0], *EXTRA_CODES.get(short, [])]))
            if not short or (wanted and not wanted & set(codes)):
                continue
            public = f"espeak-{short}"
            if public in voices:
                continue
            voices[public] = VoiceInfo(id=public, name=f"espeak-ng {short}", model=self.name, backend="espeak",
                                       languages=codes, sample_rate=self.sample_rate, backend_voice=identifier,
                                       neural=False)
        self._voices = sorted(voices.values(), key=lambda v: v.id)

    @property
    def espeak(self) -> EspeakEngine:
        """The loaded engine (``load`` first)."""
        if self.engine is None:
            raise RuntimeError(f"{self.name} is not loaded")
        return self.engine

    def voices(self) -> list[VoiceInfo]:
        return list(self._voices)

    def speech_seconds(self, text: str, voice: str, speed: float = 1.0) -> float:
        """About how long the speech of ``text`` is, from espeak-ng's phonemes, without synthesizing it."""
        clauses = self.espeak.phonemes(text, voice)
        wpm = min(MAX_WPM, max(MIN_WPM, BASE_WORDS_PER_MINUTE * speed))
        seconds = sum(SECONDS_PER_CLAUSE + SECONDS_PER_PHONEME * len(c.strip()) for c in clauses if c.strip())
        return seconds * BASE_WORDS_PER_MINUTE / wpm

    def run_batch(self, jobs: Sequence[SynthJob]) -> list[np.ndarray]:
        out = []
        for job in jobs:
            wpm = int(min(MAX_WPM, max(MIN_WPM, BASE_WORDS_PER_MINUTE * job.speed)))
            out.append(self.espeak.synthesize(job.text, job.voice, words_per_minute=wpm, seed=self.seed))
        return out
