"""Fitted context (``fit_context``, what realtime turns ask for): Whisper base encodes a short window over its own
length plus a margin instead of a padded 30 s, hears the same words, keeps its timestamps inside the clip, and a
window that fails a guard there is decoded again over the whole 30 s."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from services.core.tasks.jobs import ChunkJob
from services.stt.backends import faster_whisper
from tests import models
from tests.speech import SENTENCES, normalize, silence, synthesize

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    out = []
    for text in SENTENCES[:4]:
        audio, rate = synthesize(text)
        audio = np.concatenate([silence(0.3, rate), audio, silence(0.5, rate)])
        out.append(soxr.resample(audio, rate, 16000).astype(np.float32))
    return out


@pytest.fixture
def encoded(monkeypatch):
    """The frame count of every encoder pass the backend makes."""
    backend = models.whisper_base()
    frames: list[int] = []
    encode = backend.model.encode

    def spy(features, *args, **kwargs):
        frames.append(np.asarray(features).shape[-1])
        return encode(features, *args, **kwargs)

    monkeypatch.setattr(backend.model, "encode", spy)
    return backend, frames


def test_fitted_windows_hear_the_same_words_over_a_short_context(clips, encoded):
    backend, frames = encoded
    jobs = [ChunkJob(audio=clip, offset=0.0, language="en", word_timestamps=True, fit_context=True) for clip in clips]
    fitted = backend.run_batch(jobs)
    longest = max(len(c) for c in clips) / 16000
    step = faster_whisper.FIT_STEP_S
    assert frames == [int(np.ceil((longest + faster_whisper.FIT_MARGIN_S) / step) * step * 100)]
    assert frames[0] < faster_whisper.FULL_FRAMES
    for text, clip, result in zip(SENTENCES, clips, fitted):
        said = " ".join(s.text for s in result.segments)
        assert normalize(said) == normalize(text)
        duration = len(clip) / 16000
        words = [w for s in result.segments for w in s.words]
        assert words and all(0.0 <= w.start <= w.end <= duration + 0.01 for w in words)
        assert 0.0 <= result.segments[0].start and result.segments[-1].end <= duration + 0.01


def test_windows_too_long_or_not_asking_are_encoded_whole(clips, encoded):
    backend, frames = encoded
    long = np.concatenate([clips[0]] * 8)[: int(25 * 16000)]  # 25 s: past FIT_MAX_S
    results = backend.run_batch([ChunkJob(audio=long, offset=0.0, language="en", fit_context=True),
                                 ChunkJob(audio=clips[1], offset=0.0, language="en")])
    assert frames == [faster_whisper.FULL_FRAMES]
    assert "stella" in normalize(" ".join(s.text for s in results[1].segments))


def test_a_fitted_window_that_fails_a_guard_is_decoded_again_over_30_s(encoded):
    backend, frames = encoded
    rng = np.random.default_rng(0)
    hiss = (rng.normal(0, 0.003, 16000 * 2)).astype(np.float32)  # no speech: Whisper's no-speech check trips
    result = backend.run_batch([ChunkJob(audio=hiss, offset=0.0, language="en", fit_context=True)])[0]
    assert frames == [400, faster_whisper.FULL_FRAMES]
    assert not "".join(s.text for s in result.segments).strip()


def test_a_short_pack_is_fitted_and_a_long_one_is_not(encoded):
    backend, frames = encoded
    clips = []
    for text in SENTENCES[:5]:
        audio, rate = synthesize(text)
        clips.append(soxr.resample(np.concatenate([silence(0.3, rate), audio, silence(0.5, rate)]), rate, 16000)
                     .astype(np.float32))
    for count in (2, 5):  # a pack of two (about 9 s: fitted) and a pack of five (about 24 s: the whole window)
        frames.clear()
        results = backend.run_batch([ChunkJob(audio=clip, offset=0.0, language="en") for clip in clips[:count]])
        assert all(r.packed for r in results)
        for text, result in zip(SENTENCES, results):
            said, heard = set(normalize(text)), set(normalize(" ".join(s.text for s in result.segments)))
            assert len(said & heard) >= 0.8 * len(said)
        assert len(frames) == 1
        if count == 2:
            assert frames[0] <= faster_whisper.PACK_FIT_FRAMES
        else:
            assert frames[0] == faster_whisper.FULL_FRAMES
