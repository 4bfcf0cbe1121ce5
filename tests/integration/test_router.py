"""The router over loopback: routing, aliases, errors in OpenAI's shape, limits, disconnects."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from services.core.contracts.specs import parse_config
from services.router.app import build_table, create_router_app
from tests.integration.conftest import CONFIG
from tests.servers import ServerThread, dead_url
from tests.speech import SENTENCES, speech_with_pauses, synthesize, wav_bytes, wer


def transcribe(url: str, data: bytes, timeout: float = 120, **fields) -> httpx.Response:
    return httpx.post(url + "/v1/audio/transcriptions", files={"file": ("a.wav", data)},
                      data={"model": "whisper-1", **fields}, timeout=timeout)


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code:
        assert error["code"] == code
    return error


def test_alias_routes_to_the_configured_default(router):
    response = transcribe(router.url, wav_bytes(*synthesize(SENTENCES[0])))
    assert response.status_code == 200 and wer(SENTENCES[0], response.json()["text"]) <= 0.2


def test_unknown_model_is_404_listing_served_models(router):
    error = assert_openai_error(transcribe(router.url, b"x", model="whisper-large"), 404, "model_not_found")
    assert "whisper-1" in error["message"] and error["param"] == "model"


def test_missing_file_and_missing_model_are_400(router):
    response = httpx.post(router.url + "/v1/audio/transcriptions", data={"model": "whisper-1"})
    assert_openai_error(response, 400, "missing_required_parameter")
    response = httpx.post(router.url + "/v1/audio/transcriptions", files={"file": ("a.wav", b"x")})
    assert_openai_error(response, 400, "missing_required_parameter")
    response = httpx.post(router.url + "/v1/audio/transcriptions", json={"model": "whisper-1"})
    assert_openai_error(response, 400)


def test_service_errors_pass_through_in_openai_shape(router):
    assert_openai_error(transcribe(router.url, b"garbage" * 50), 400, "invalid_audio")
    assert_openai_error(transcribe(router.url, wav_bytes(*synthesize("Hello.")), temperature="2.5"), 400)


def test_chunked_upload_over_the_limit_is_413(router):
    def body():  # a well-formed multipart upload of 6 MB, no Content-Length, over this config's 5 MB limit
        yield b'--abc\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        for _ in range(60):
            yield b"x" * 100_000
        yield b"\r\n--abc--\r\n"
    response = httpx.post(router.url + "/v1/audio/transcriptions", content=body(),
                          headers={"content-type": "multipart/form-data; boundary=abc"})
    assert_openai_error(response, 413, "file_too_large")


def test_service_down_is_503_naming_the_model():
    config = parse_config(CONFIG)
    with dead_url() as dead, ServerThread(create_router_app(
            config, build_table(config, {m.name: [dead] for m in config.models}))) as router:
        error = assert_openai_error(transcribe(router.url, wav_bytes(*synthesize("Hello."))), 503)
        assert "whisper-base" in error["message"]
        assert httpx.get(router.url + "/readyz").status_code == 503


def test_requests_balance_across_replicas_and_skip_a_dead_one(router, stt_service):
    config = parse_config(CONFIG)
    with dead_url() as dead:
        table = build_table(config, {m.name: [dead, stt_service.url] for m in config.models})
        _balance_and_skip(config, table, dead, stt_service.url)


def _balance_and_skip(config, table, dead: str, live: str) -> None:
    with ServerThread(create_router_app(config, table)) as second:
        for _ in range(2):
            response = transcribe(second.url, wav_bytes(*synthesize(SENTENCES[0])))
            assert response.status_code == 200, response.text
        replicas = {r.url: r for r in table.models["whisper-base"].replicas}
        assert replicas[dead].ejected  # ejected alone after the refused connection (probed back by its /readyz)
        assert replicas[live].in_flight == 0


def test_client_that_goes_away_is_dropped_not_computed(stt_service):
    """A queued request whose client disconnects never reaches the model.

    The model's only worker is held (a gate in front of the real backend) while the short request queues
    and its client gives up, so the order of events does not depend on how fast this machine is.
    """
    app = stt_service.app
    model = app.state.models["whisper-tiny.en"]
    stats, real = model.batcher.stats, model.batcher.run_batch
    gate, entered = threading.Event(), threading.Event()

    def gated(items, **kwargs):  # the batcher hands the real backend its ``wanted`` too
        entered.set()
        gate.wait(120)
        return real(items, **kwargs)

    def client_errors() -> float:  # requests the service cancelled because their client left
        labels = {"component": "stt", "route": "/v1/audio/transcriptions", "outcome": "cancelled"}
        return app.state.metrics.registry.get_sample_value("harmony_http_requests_total", labels) or 0.0

    long_audio = wav_bytes(*speech_with_pauses(SENTENCES * 2, pause_s=1.0))
    items_before, dropped_before, errors_before = stats.items, stats.dropped_cancelled, client_errors()
    model.batcher.run_batch = gated
    busy = threading.Thread(target=lambda: transcribe(stt_service.url, long_audio, model="whisper-tiny.en"))
    try:
        busy.start()
        assert entered.wait(60)  # the long request's first window now holds the worker
        with pytest.raises(httpx.TimeoutException):
            transcribe(stt_service.url, wav_bytes(*synthesize(SENTENCES[1])), model="whisper-tiny.en", timeout=0.3)
        deadline = time.monotonic() + 60
        while client_errors() == errors_before and time.monotonic() < deadline:
            time.sleep(0.05)  # until the service has seen the client go and cancelled its queued item
        assert client_errors() > errors_before
    finally:
        gate.set()
        busy.join(180)
        model.batcher.run_batch = real
    long_windows = 3  # 51 s of audio: two windows, plus at most one re-decoded tail
    assert stats.items - items_before <= long_windows
    assert stats.dropped_cancelled - dropped_before >= 1
