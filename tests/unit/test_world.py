"""WORLD voice conversion: speaker statistics, conversion toward a target voice, refused references."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pydantic import ValidationError

from services.core.audio import resample
from services.core.contracts.errors import InvalidRequest
from services.core.contracts.specs import NamedModel, Task
from services.core.tasks.jobs import ConversionJob, SynthJob
from services.core.tasks.protocols import VoiceConverter, verify
from services.vc.backends.world import WorldConverter
from services.vc.stats import SpeakerStats, analyze_speech
from tests import models
from tests.speech import SENTENCES, synthesize, wer

# the female target: Kokoro jf_alpha reading Japanese (two texts: statistics, and the embedding to compare with).
# Kokoro is this file's cost (RTF 1-2 on a loaded 2-core machine): the reference is one sentence (6.1 s, 1,222
# frames), the embedding's text 2.6 s.
REFERENCE_JA = "昨日の午後、私は友達と一緒に駅の近くの新しい喫茶店に行きました。"
EMBED_JA = "本は入口の箱に返してください。"
SOURCE_TEXT = SENTENCES[3]  # "A journey of a thousand miles begins with a single step."


@pytest.fixture(scope="module")
def converter() -> WorldConverter:
    backend = WorldConverter(NamedModel(name="world-vc", task="vc", backend="world", source={"path": "none"}))
    backend.load()
    return backend


@pytest.fixture(scope="module")
def kokoro():
    return models.kokoro_ja()


@pytest.fixture(scope="module")
def whisper():
    return models.whisper_base()


@pytest.fixture(scope="module")
def encoder():
    from resemblyzer import VoiceEncoder

    return VoiceEncoder("cpu", verbose=False)


@pytest.fixture(scope="module")
def source() -> np.ndarray:
    """Plain TTS speech (male, 22050 Hz) to convert, at Piper's own level (peak 0.56: a peak-normalised source
    converted to a higher voice would peak above 1)."""
    return models.piper_joe().run_batch([SynthJob(SOURCE_TEXT, "joe", "en")])[0]


@pytest.fixture(scope="module")
def male_reference() -> np.ndarray:
    """The session's cached Piper speech (statistics do not depend on the level)."""
    return np.concatenate([synthesize(text)[0] for text in SENTENCES[:3]])


@pytest.fixture(scope="module")
def female_reference(kokoro) -> np.ndarray:
    return kokoro.run_batch([SynthJob(REFERENCE_JA, "jf_alpha", "ja")])[0]


@pytest.fixture(scope="module")
def male_stats(converter, male_reference) -> dict:
    return converter.analyze(male_reference, 22050)


@pytest.fixture(scope="module")
def female_stats(converter, female_reference) -> dict:
    return converter.analyze(female_reference, 24000)


def embed(encoder, audio: np.ndarray, rate: int) -> np.ndarray:
    from resemblyzer import preprocess_wav

    return encoder.embed_utterance(preprocess_wav(resample(audio, rate, 16000), source_sr=16000))


def transcribe(whisper, audio: np.ndarray, rate: int) -> str:
    from services.core.tasks.jobs import ChunkJob

    result = whisper.run_batch([ChunkJob(audio=resample(audio, rate, 16000), offset=0.0, language="en")])[0]
    return " ".join(s.text for s in result.segments)


def test_converter_fits_the_protocol(converter):
    assert converter.task == "vc" and converter.name == "world-vc"
    assert isinstance(converter, VoiceConverter)  # the task's one protocol (services/core/tasks/protocols.py)
    verify(converter, Task.vc)


def test_female_statistics_have_higher_pitch(male_stats, female_stats):
    male, female = SpeakerStats.model_validate(male_stats), SpeakerStats.model_validate(female_stats)
    assert male.kind == female.kind == "world-v1"
    assert male.sample_rate == female.sample_rate == 16000
    assert female.log_f0_mean > male.log_f0_mean + math.log(1.3), (male.f0_mean_hz, female.f0_mean_hz)
    assert 60 < male.f0_mean_hz < 200 and 180 < female.f0_mean_hz < 400
    for stats in (male, female):
        assert stats.frames > 1000 and 0.3 < stats.voiced_fraction <= 1.0 and stats.log_f0_std > 0
        assert len(stats.envelope_codebook[0]) == len(stats.envelope_mean) == len(stats.grid())


def test_warp_moves_formants_toward_the_target(converter, male_stats, female_stats, source, female_reference):
    up = converter.convert(ConversionJob(audio=source, sample_rate=22050, target=female_stats))
    down = converter.convert(ConversionJob(audio=female_reference[: 24000 * 4], sample_rate=24000,
                                           target=male_stats))
    assert up.warp > 1.1 and up.f0_ratio > 1.3
    assert down.warp < 0.9 and down.f0_ratio < 0.77


def test_conversion_is_closer_to_the_target_and_intelligible(converter, female_stats, source, kokoro, encoder,
                                                             whisper):
    [converted] = converter.run_batch([ConversionJob(audio=source, sample_rate=22050, target=female_stats)])
    assert converted.dtype == np.float32 and abs(len(converted) - len(source)) <= 0.02 * 22050
    target = embed(encoder, kokoro.run_batch([SynthJob(EMBED_JA, "jf_alpha", "ja")])[0], 24000)
    plain_cos = float(embed(encoder, source, 22050) @ target)
    cloned_cos = float(embed(encoder, converted, 22050) @ target)
    assert cloned_cos > plain_cos + 0.1, (plain_cos, cloned_cos)
    text = transcribe(whisper, converted, 22050)
    assert wer(SOURCE_TEXT, text) <= 0.25, text


@pytest.mark.parametrize("rate", [16000, 24000])
def test_output_keeps_length_and_rate(converter, female_stats, source, rate):
    audio = resample(source, 22050, rate)
    jobs = [ConversionJob(audio=audio, sample_rate=rate, target=female_stats),
            ConversionJob(audio=audio[: rate // 2], sample_rate=rate, target=female_stats)]
    out = converter.run_batch(jobs)
    assert [abs(len(o) - len(j.audio)) <= 0.02 * rate for o, j in zip(out, jobs)] == [True, True]
    assert all(np.isfinite(o).all() and np.max(np.abs(o)) <= 1.0 for o in out)
    level = lambda a: float(np.sqrt(np.mean(a.astype(np.float64) ** 2)))  # noqa: E731
    assert level(out[0]) == pytest.approx(level(audio), rel=0.05)


def test_silent_or_tiny_input_is_returned_unchanged(converter, female_stats):
    for audio in (np.zeros(22050, np.float32), np.zeros(100, np.float32)):
        [out] = converter.run_batch([ConversionJob(audio=audio, sample_rate=22050, target=female_stats)])
        assert np.array_equal(out, audio)


def _noise(kind: str, seconds: float, rate: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(7)
    white = rng.normal(0.0, 0.1, int(seconds * rate))
    if kind == "white":
        return white.astype(np.float32)
    spectrum = np.fft.rfft(white)
    spectrum /= np.sqrt(np.maximum(np.fft.rfftfreq(len(white), 1.0 / rate), 20.0))  # pink: 1/f power
    pink = np.fft.irfft(spectrum, len(white))
    return (0.1 * pink / np.abs(pink).max()).astype(np.float32)


@pytest.mark.parametrize("case", ["silence", "white noise", "pink noise", "hum", "very short", "short speech"])
def test_bad_references_are_refused(converter, female_reference, case):
    rate = 16000
    audio = {
        "silence": lambda: np.zeros(5 * rate, np.float32),
        "white noise": lambda: _noise("white", 6.0),
        "pink noise": lambda: _noise("pink", 10.0),
        "hum": lambda: (0.1 * np.sin(2 * np.pi * 120 * np.arange(5 * rate) / rate)).astype(np.float32),
        "very short": lambda: resample(female_reference[: 24000], 24000, rate),        # 1 s of speech
        "short speech": lambda: np.concatenate([resample(female_reference[12000: 12000 + 24000], 24000, rate),
                                                np.zeros(3 * rate, np.float32)]),       # 1 s speech + 3 s silence
    }[case]()
    with pytest.raises(InvalidRequest) as info:
        converter.analyze(audio, rate)
    assert info.value.code == "bad_reference" and info.value.status_code == 400


def test_statistics_survive_a_json_round_trip(converter, female_stats, source):
    text = json.dumps(female_stats)
    assert len(text) < 20_000
    again = json.loads(text)
    assert again == female_stats
    assert SpeakerStats.model_validate(again).model_dump() == female_stats
    job = lambda target: ConversionJob(audio=source[: 22050 * 2], sample_rate=22050, target=target)  # noqa: E731
    assert np.array_equal(converter.run_batch([job(again)])[0],
                          converter.run_batch([job(SpeakerStats.model_validate(female_stats))])[0])


def test_foreign_statistics_are_refused(converter, female_stats, source):
    with pytest.raises(ValidationError):
        SpeakerStats.model_validate({**female_stats, "extra": 1})
    with pytest.raises(ValidationError):
        SpeakerStats.model_validate({**female_stats, "kind": "world-v2"})
    with pytest.raises(ValidationError):
        SpeakerStats.model_validate({**female_stats, "envelope_codebook": [[0.0, 1.0]]})
    with pytest.raises(InvalidRequest) as info:
        converter.run_batch([ConversionJob(audio=source, sample_rate=22050, target={"kind": "neural-v1"})])
    assert info.value.code == "bad_reference"


def test_analyze_speech_matches_the_converter(female_reference, female_stats):
    assert analyze_speech(female_reference, 24000).model_dump() == female_stats


def test_options_are_checked():
    spec = lambda **options: NamedModel(name="w", task="vc", backend="world", source={"path": "x"},  # noqa: E731
                                        options=options)
    assert WorldConverter(spec(f0_method="harvest", warp_max=1.3, envelope_strength=0)).warp_max == 1.3
    for bad in ({"f0_method": "crepe"}, {"warp_min": 1.2}, {"warp_max": 3}, {"frame_period_ms": 0.1},
                {"envelope_strength": "lots"}):
        with pytest.raises(ValueError):
            WorldConverter(spec(**bad))
