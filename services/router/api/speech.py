"""POST /v1/audio/speech (OpenAI's text-to-speech) and GET /v1/audio/voices."""

from __future__ import annotations

import base64
import json
import unicodedata
from typing import Any, AsyncIterator, Literal

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import Response
from services.auth.audit import audio_seconds_of
from services.auth.estimates import speech_seconds
from services.auth.guard import check_voice, note_usage, reserve_audio, visible_voices
from services.core.audio.codec import CONTENT_TYPES, AudioFormat
from services.core.contracts.errors import HarmonyError, InvalidRequest
from services.core.contracts.specs import Task
from services.router.upstream.clients import ServiceClients
from services.core.contracts.wire import JsonFloat, JsonInt, RegisteredVoiceList, SynthesisRequest, has_words, speakable
from services.router.upstream.clients import transport_errors
from services.router.upstream.relay import RelayResponse, Upstream
from services.router.routing import ServedModel
from services.router.pipelines import PipelineRunner, PipelineState, steps_headers
from services.router.api.voice_admin import store_model
from services.router.voices import VoiceDirectory
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MAX_INPUT_CHARS = 4096
OPENAI_PCM_RATE = 24000  # OpenAI's pcm is 24 kHz, 16-bit, mono: what its clients play it at


class SpeechRequest(BaseModel):
    """OpenAI's request body, plus two documented extensions: ``language`` and ``sample_rate``."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: str = Field(..., min_length=1)
    input: str
    voice: str
    response_format: AudioFormat = "mp3"
    speed: JsonFloat = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = None  # accepted; no backend here can follow free-form instructions
    stream_format: Literal["audio", "sse"] = "audio"
    language: str | None = Field(None, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]+)*$")
    sample_rate: JsonInt | None = Field(None, ge=8000, le=48000)
    reference_audio: str | None = Field(None, description="extension: base64 audio of the voice to clone")

    @field_validator("voice", mode="before")
    @classmethod
    def _voice_object(cls, value: Any) -> Any:
        return value.get("id") if isinstance(value, dict) else value  # newer SDKs may send {"id": ...}

    @field_validator("input")
    @classmethod
    def _input_length(cls, value: str) -> str:
        value = speakable(value)
        if not any(not ch.isspace() and unicodedata.category(ch) != "Cf" for ch in value):
            raise ValueError("input must not be empty")
        if not has_words(value):
            raise ValueError("input has nothing to speak: no letters, digits or symbols, only punctuation")
        if len(value) > MAX_INPUT_CHARS:
            raise ValueError(f"input is {len(value)} characters; the maximum is {MAX_INPUT_CHARS}")
        return value

    @model_validator(mode="after")
    def _pcm_rate(self) -> "SpeechRequest":
        if self.response_format == "pcm" and self.sample_rate is None:
            self.sample_rate = OPENAI_PCM_RATE
        return self


def routes(voices: VoiceDirectory, clients: ServiceClients, runner: PipelineRunner) -> APIRouter:
    api = APIRouter(tags=["audio"])

    @api.get("/v1/audio/voices")
    async def list_voices() -> dict:
        listing = await voices.listing()
        data = [{"id": v.id, "object": "voice", "name": v.name, "model": v.model, "backend": v.backend,
                 "languages": v.languages, "sample_rate": v.sample_rate, "neural": v.neural} for v in listing]
        return {"object": "list", "data": data + await _registered(runner, clients)}

    @api.post("/v1/audio/speech")
    async def speech(request: Request) -> Response:
        body = await _parse(request)
        note_usage(characters=len(body.input))
        if body.voice.startswith("voice_") or body.reference_audio:
            return await _clone(body, runner)
        model, voice, language = await voices.choose(body.model, body.voice, body.language)
        await reserve_audio(lambda: speech_seconds(body.input, body.speed))  # settled to the audio sent
        payload = SynthesisRequest(model=model.name, input=body.input, voice=voice.backend_voice, language=language,
                                   speed=body.speed, response_format=body.response_format,
                                   sample_rate=body.sample_rate)
        upstream = Upstream()  # opened first: errors before the first byte become proper HTTP errors
        response = await upstream.open(clients.stream(model, "/v1/audio/speech", json=payload.model_dump()))
        headers = {"X-Harmony-Voice": voice.id, "X-Harmony-Model": model.name,
                   "X-Sample-Rate": response.headers.get("x-sample-rate", "")}
        if body.stream_format == "sse":
            return RelayResponse(_sse(model, response, body.response_format), upstream,
                                 media_type="text/event-stream", headers=headers)
        return RelayResponse(_relay(model, response), upstream, media_type=CONTENT_TYPES[body.response_format],
                             headers=headers)

    return api


async def _registered(runner: PipelineRunner, clients: ServiceClients) -> list[dict]:
    """Registered (cloned) voices, from the voice store of the clone route's vc model."""
    try:
        route_name, model = store_model(runner)
        response = await clients.get(model, "/v1/voices")
    except HarmonyError:
        return []
    records = RegisteredVoiceList.model_validate_json(response.content).data
    mine = await visible_voices([r.id for r in records])
    records = [r for r in records if r.id in mine]
    return [{"id": r.id, "object": "voice", "name": r.name, "model": route_name, "backend": "clone",
             "languages": [], "created_at": r.created_at, "speech_seconds": r.speech_seconds,
             "neural": False} for r in records]


async def _clone(body: SpeechRequest, runner: PipelineRunner) -> Response:
    """Speech in a registered voice, or in the voice of reference audio sent with the request."""
    route = runner.route(Task.tts, body.model)
    state = PipelineState(text=body.input, language=body.language, speed=body.speed,
                          response_format=body.response_format, sample_rate=body.sample_rate)
    if body.voice.startswith("voice_"):
        await check_voice(body.voice)
        state.voice_id = body.voice
    else:
        try:
            reference = base64.b64decode(body.reference_audio or "", validate=True)
        except ValueError:
            raise InvalidRequest("'reference_audio' must be base64-encoded audio", param="reference_audio") \
                from None
        if not reference:
            raise InvalidRequest("'reference_audio' is empty", param="reference_audio")
        state.references, state.reference_param = [("reference", reference)], "reference_audio"
    await reserve_audio(lambda: speech_seconds(body.input, body.speed))  # settled to the audio answered
    await runner.run(route, state)
    headers = {**steps_headers(route, state), "X-Sample-Rate": str(state.sample_rate or "")}
    if body.stream_format == "sse":  # the audio is inside the events: charged from its own size
        note_usage(audio_seconds_out=audio_seconds_of(CONTENT_TYPES[body.response_format], state.sample_rate,
                                                      len(state.output or b"")))
        events = [{"type": "speech.audio.delta", "audio": base64.b64encode(state.output or b"").decode()},
                  {"type": "speech.audio.done", "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}}]
        payload = "".join(f"data: {json.dumps(e)}\n\n" for e in events).encode()
        return Response(payload, media_type="text/event-stream", headers=headers)
    return Response(state.output, media_type=CONTENT_TYPES[body.response_format], headers=headers)


async def _parse(request: Request) -> SpeechRequest:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidRequest("the body must be JSON", code="invalid_json") from None
    except RecursionError:
        raise InvalidRequest("the body is nested too deeply", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object", code="invalid_json")
    _check_unicode(data)
    try:
        return SpeechRequest.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = ".".join(str(p) for p in error["loc"]) or None
        message = error["msg"].removeprefix("Value error, ")
        code = "missing_required_parameter" if error["type"] == "missing" else "invalid_value"
        raise InvalidRequest(f"{param}: {message}" if param else message, param=param, code=code) from None


def _check_unicode(data: dict) -> None:
    """A lone surrogate (``"\\ud800"``) is valid JSON but no text: it could not be sent on, nor spoken."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest("the body holds a lone UTF-16 surrogate escape: not valid Unicode text",
                             code="invalid_json") from None
    except RecursionError:
        raise InvalidRequest("the body is nested too deeply", code="invalid_json") from None


async def _relay(model: ServedModel, response: httpx.Response) -> AsyncIterator[bytes]:
    """The audio as it comes; a failure after the first byte cuts the body (the client sees it incomplete)."""
    with transport_errors(model):
        async for chunk in response.aiter_raw():
            yield chunk


async def _sse(model: ServedModel, response: httpx.Response, fmt: str) -> AsyncIterator[bytes]:
    """OpenAI's speech events: speech.audio.delta (base64 audio), then speech.audio.done, or an error event. The
    audio sent is charged from its size (the response itself is text)."""
    rate = response.headers.get("x-sample-rate", "")
    sent = 0
    try:
        with transport_errors(model):
            async for chunk in response.aiter_raw():
                if chunk:
                    sent += len(chunk)
                    event = {"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()}
                    yield f"data: {json.dumps(event)}\n\n".encode()
        done = {"type": "speech.audio.done", "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}}
        yield f"data: {json.dumps(done)}\n\n".encode()
    except HarmonyError as exc:
        yield f"data: {json.dumps({'type': 'error', **exc.to_body()})}\n\n".encode()
    finally:
        note_usage(audio_seconds_out=audio_seconds_of(CONTENT_TYPES[fmt], int(rate) if rate.isdigit() else None, sent))
