"""The VAD service (Silero VAD, ONNX) over loopback: segments of speech with a known layout, batching, errors."""

from __future__ import annotations

import re
import threading

import httpx
import numpy as np
import pytest

from services.core.audio import resample
from services.core.contracts.specs import NamedModel, parse_config
from services.router.app import build_table, create_router_app
from services.vad.app import create_vad_app
from services.vad.backends.silero import SileroVadBackend
from tests.servers import ServerThread
from tests.speech import SENTENCES, loud_span, silence, synthesize, wav_bytes

SPEC = {"name": "silero-vad", "task": "vad", "backend": "silero", "source": {"package": "silero-vad"},
        "batching": {"max_batch_size": 8, "max_queue_delay_ms": 50}}
TOLERANCE_S = 0.3


@pytest.fixture(scope="module")
def vad_service():
    with ServerThread(create_vad_app([NamedModel(**SPEC)])) as server:
        yield server


@pytest.fixture(scope="module")
def backend():
    model = SileroVadBackend(NamedModel(**SPEC))
    model.load()
    return model


@pytest.fixture(scope="module")
def layout():
    """1 s silence, sentence A, 1.5 s silence, sentence B, 1 s silence; the true speech spans in seconds."""
    a, rate = synthesize(SENTENCES[0])
    b, _ = synthesize(SENTENCES[3])
    parts = [silence(1.0, rate), a, silence(1.5, rate), b, silence(1.0, rate)]
    a_at = len(parts[0]) / rate
    b_at = (len(parts[0]) + len(a) + len(parts[2])) / rate
    (a0, a1), (b0, b1) = loud_span(a, rate), loud_span(b, rate)
    truth = [(a_at + a0, a_at + a1), (b_at + b0, b_at + b1)]
    return np.concatenate(parts), rate, truth


def vad(url: str, data: bytes, **fields) -> httpx.Response:
    return httpx.post(url + "/v1/audio/vad", files={"file": ("speech.wav", data, "audio/wav")},
                      data={k: str(v) for k, v in fields.items()}, timeout=60)


def assert_matches(segments: list[dict], truth: list[tuple[float, float]]) -> None:
    assert len(segments) == len(truth), segments
    for got, (start, end) in zip(segments, truth):
        assert abs(got["start"] - start) <= TOLERANCE_S, (got, start, end)
        assert abs(got["end"] - end) <= TOLERANCE_S, (got, start, end)


def test_finds_both_sentences_where_they_are(vad_service, layout):
    audio, rate, truth = layout
    response = vad(vad_service.url, wav_bytes(audio, rate))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "vad" and body["model"] == "silero-vad"
    assert abs(body["duration"] - len(audio) / rate) < 0.01
    assert_matches(body["segments"], truth)
    total = sum(s["end"] - s["start"] for s in body["segments"])
    assert body["speech_seconds"] == pytest.approx(total, abs=0.002)


def test_parameters_change_the_result(vad_service, layout):
    audio, rate, truth = layout
    data = wav_bytes(audio, rate)
    normal = vad(vad_service.url, data).json()
    # both sentences last under 3 s: a 5-s minimum drops them
    assert vad(vad_service.url, data, min_speech_duration_ms=5000).json()["segments"] == []
    strict = vad(vad_service.url, data, threshold=0.99).json()
    assert strict["speech_seconds"] < normal["speech_seconds"]
    padded = vad(vad_service.url, data, speech_pad_ms=200).json()
    assert padded["segments"][0]["start"] == pytest.approx(normal["segments"][0]["start"] - 0.17, abs=0.002)
    # a 1-s maximum cuts each sentence into pieces
    pieces = vad(vad_service.url, data, max_speech_duration_s=1.0).json()["segments"]
    assert len(pieces) > 2 and all(s["end"] - s["start"] <= 1.0 + 0.061 for s in pieces)


def test_silence_and_quiet_noise_are_not_speech(vad_service):
    rate = 16000
    body = vad(vad_service.url, wav_bytes(silence(3.0, rate), rate)).json()
    assert body["segments"] == [] and body["speech_seconds"] == 0
    noise = (np.random.default_rng(3).standard_normal(4 * rate) * 0.01).astype(np.float32)  # -40 dBFS white noise
    body = vad(vad_service.url, wav_bytes(noise, rate)).json()
    assert body["speech_seconds"] <= 0.3, body


def batch_count(url: str) -> int:
    text = httpx.get(url + "/metrics").text
    match = re.search(r'^harmony_batch_size_count\{model="silero-vad"\} (\S+)$', text, re.M)
    return int(float(match.group(1))) if match else 0


def test_concurrent_requests_share_batches(vad_service, layout):
    audio, rate, truth = layout
    shifted = np.concatenate([silence(0.5, rate), audio])  # a second layout, half a second later
    uploads = [(wav_bytes(audio, rate), truth), (wav_bytes(shifted, rate), [(s + 0.5, e + 0.5) for s, e in truth])] * 2
    before = batch_count(vad_service.url)
    start = threading.Barrier(len(uploads))
    results: list = [None] * len(uploads)

    def call(i: int) -> None:
        start.wait()
        results[i] = vad(vad_service.url, uploads[i][0])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(uploads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for response, (_, expected) in zip(results, uploads):
        assert response.status_code == 200, response.text
        assert_matches(response.json()["segments"], expected)
    assert batch_count(vad_service.url) - before < len(uploads)


def test_batched_probabilities_equal_single_stream(backend, layout):
    audio, rate, _ = layout
    speech = resample(audio, rate, 16000)
    items = [speech, speech[7000:40000], np.zeros(5000, dtype=np.float32), speech[::-1].copy(), speech[:513]]
    batched = backend.run_batch(items)
    for item, probs in zip(items, batched):
        single = backend.run_batch([item])[0]
        assert probs.shape == single.shape == (-(-len(item) // 512),)
        assert np.allclose(probs, single, atol=1e-4)


def test_probabilities_equal_silero_reference(backend, layout):
    """Row by row the same as silero-vad's own OnnxWrapper (context, state and padding handled identically)."""
    torch = pytest.importorskip("torch")
    from silero_vad.utils_vad import OnnxWrapper

    audio, rate, _ = layout
    speech = resample(audio, rate, 16000)
    items = [speech, speech[3000:30000]]
    reference = OnnxWrapper(str(backend.path), force_onnx_cpu=True)
    for item, probs in zip(items, backend.run_batch(items)):
        expected = reference.audio_forward(torch.from_numpy(item)[None], 16000)[0].numpy()
        assert np.allclose(probs, expected, atol=1e-4)


def test_errors(vad_service):
    response = vad(vad_service.url, b"this is not audio at all")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_audio"
    silent = wav_bytes(silence(0.5, 16000), 16000)
    for field, value in [("threshold", "1.5"), ("threshold", "abc"), ("min_speech_duration_ms", "-1"),
                         ("speech_pad_ms", "x"), ("min_silence_duration_ms", "-3")]:
        response = vad(vad_service.url, silent, **{field: value})
        assert response.status_code == 400 and response.json()["error"]["param"] == field, response.text
    response = vad(vad_service.url, silent, model="no-such-model")
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    response = httpx.post(vad_service.url + "/v1/audio/vad", data={"threshold": "0.5"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "file"


def test_router_forwards_to_the_vad_service(vad_service, layout):
    audio, rate, truth = layout
    config = parse_config({"models": [SPEC]})
    table = build_table(config, {"silero-vad": [vad_service.url]})
    with ServerThread(create_router_app(config, table)) as router:
        data = wav_bytes(audio, rate)
        response = vad(router.url, data)  # no model: the first vad model
        assert response.status_code == 200, response.text
        assert_matches(response.json()["segments"], truth)
        strict = vad(router.url, data, model="silero-vad", threshold=0.99, speech_pad_ms=0)
        assert strict.status_code == 200 and strict.json()["speech_seconds"] < response.json()["speech_seconds"]
        response = vad(router.url, data, threshold="2")
        assert response.status_code == 400 and response.json()["error"]["param"] == "threshold"
        response = vad(router.url, data, model="whisper-1")
        assert response.status_code == 404 and response.json()["error"]["param"] == "model"
        response = vad(router.url, b"garbage")
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_audio"
