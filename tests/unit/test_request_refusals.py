"""Nothing accepted and ignored (issue 24): the multipart and JSON parsers refuse fields they do not define by
name, the transcription form refuses what it cannot honour, and ``server.ignore_unsupported`` turns a refusal into
an ``X-Harmony-Ignored`` header."""

from __future__ import annotations

import io

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.datastructures import FormData, UploadFile

from services.core.contracts.errors import InvalidRequest
from services.core.http.errors import install_error_handlers
from services.core.http.form_body import parse_form
from services.core.http.json_body import parse_json_body
from services.core.http.unsupported import IgnoredFields
from services.router.api.protocol.speech import SpeechRequest
from services.router.api.protocol.transcription import TranscriptionForm


def _form(**fields) -> FormData:
    items: list = [("file", UploadFile(file=io.BytesIO(b"x"), filename="a.wav"))]
    for key, value in fields.items():
        items += [(key, v) for v in value] if isinstance(value, list) else [(key, value)]
    return FormData(items)


def test_unknown_form_field_is_refused_by_name():
    with pytest.raises(InvalidRequest) as bad:
        parse_form(_form(model="whisper-1", temprature="0.2"), TranscriptionForm)
    assert bad.value.param == "temprature" and bad.value.code == "unknown_parameter"


def test_openai_fields_are_known():
    form = parse_form(_form(**{"model": "whisper-1", "include[]": ["logprobs"], "keywords[]": ["Stella"],
                               "languages": ["en", "de"], "chunking_strategy[type]": "server_vad",
                               "known_speaker_names[]": ["agent"]}), TranscriptionForm)
    assert form.include == ["logprobs"] and form.keywords == ["Stella"] and form.languages == ["en", "de"]
    assert form.uses_vad_chunking() and form.known_speaker_names == ["agent"]


@pytest.mark.parametrize("response_format", ["text", "srt", "vtt", "verbose_json"])
def test_logprobs_need_json(response_format):
    with pytest.raises(InvalidRequest) as bad:
        parse_form(_form(model="whisper-1", include="logprobs", response_format=response_format), TranscriptionForm)
    assert bad.value.param == "include"


def test_bad_include_and_chunking_are_named():
    with pytest.raises(InvalidRequest) as bad:
        parse_form(_form(model="whisper-1", include="tokens"), TranscriptionForm)
    assert bad.value.param == "include.0"
    form = parse_form(_form(model="whisper-1", chunking_strategy="sometimes"), TranscriptionForm)
    with pytest.raises(InvalidRequest) as bad:
        form.uses_vad_chunking()
    assert bad.value.param == "chunking_strategy"
    form = parse_form(_form(**{"model": "whisper-1", "chunking_strategy[type]": "server_vad",
                               "chunking_strategy[silence_duration_ms]": "300"}), TranscriptionForm)
    with pytest.raises(InvalidRequest) as bad:
        form.uses_vad_chunking()
    assert bad.value.param == "chunking_strategy.silence_duration_ms" and bad.value.code == "unsupported_parameter"


def _app(ignore: bool) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(IgnoredFields, enabled=ignore)

    @app.post("/speech")
    async def speech(request: Request):
        body = await parse_json_body(request, SpeechRequest)
        return {"instructions": body.instructions, "voice": body.voice}

    return app


async def _post(app: FastAPI, body: dict) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.post("/speech", json=body)


BODY = {"model": "tts-1", "voice": "alloy", "input": "Hello.", "instructions": "Whisper it.", "volume": 2}


async def test_json_fields_refused_by_name():
    response = await _post(_app(False), BODY)
    assert response.status_code == 400 and response.json()["error"]["param"] == "volume"
    response = await _post(_app(False), {k: v for k, v in BODY.items() if k != "volume"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "instructions"
    assert response.json()["error"]["code"] == "unsupported_parameter"


async def test_ignore_unsupported_lets_them_through_and_names_them():
    response = await _post(_app(True), BODY)
    assert response.status_code == 200, response.text
    assert response.headers["X-Harmony-Ignored"] == "volume,instructions"
    assert response.json() == {"instructions": None, "voice": "alloy"}
    response = await _post(_app(True), {k: v for k, v in BODY.items() if k not in ("volume", "instructions")})
    assert response.status_code == 200 and "X-Harmony-Ignored" not in response.headers
