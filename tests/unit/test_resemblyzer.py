"""Resemblyzer speaker embeddings: the batched backend against Resemblyzer itself (the checks both speaker encoders
must pass: tests/unit/test_speaker_encoders.py)."""

from __future__ import annotations

import numpy as np
import pytest

from services.vc.backends.resemblyzer import ResemblyzerEncoder, normalize_volume
from tests.speaker_encoders import cosine, loaded, speech_clips


@pytest.fixture(scope="module")
def encoder() -> ResemblyzerEncoder:
    return loaded(ResemblyzerEncoder, "resemblyzer")


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    """Piper speech of different lengths: a short one (< one 1.6 s window), ~2.8 s, and ~3.7 s."""
    return speech_clips(1.0)


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
