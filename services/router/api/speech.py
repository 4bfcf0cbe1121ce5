"""POST /v1/audio/speech (OpenAI's text-to-speech) and GET /v1/audio/voices."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.auth.audit import audio_seconds_of
from services.auth.estimates import speech_seconds
from services.auth.guard import check_voice, note_usage, reserve_audio, visible_voices
from services.core.contracts.errors import HarmonyError, InvalidRequest
from services.core.contracts.formats import CONTENT_TYPES
from services.core.contracts.specs import Task
from services.core.contracts.wire import RegisteredVoiceList, SynthesisRequest
from services.core.http.json_body import json_request_body, parse_json_body
from services.core.http.sse import MEDIA_TYPE, sse_frame
from services.router.access import allow_model, allow_route
from services.router.api.protocol.speech import (
    SPEECH_RESPONSES,
    SpeechAudioDelta,
    SpeechAudioDone,
    SpeechError,
    SpeechRequest,
    VoiceListResponse,
    VoiceObject,
)
from services.router.api.voice_admin import store_model
from services.router.pipelines import PipelineRunner, PipelineState, steps_headers
from services.router.routing import ServedModel
from services.router.upstream.clients import ServiceClients, transport_errors
from services.router.upstream.relay import RelayResponse, Upstream
from services.router.voices import VoiceDirectory


def routes(voices: VoiceDirectory, clients: ServiceClients, runner: PipelineRunner) -> APIRouter:
    api = APIRouter(tags=["audio"])

    @api.get("/v1/audio/voices", response_model_exclude_unset=True)
    async def list_voices() -> VoiceListResponse:
        listing = await voices.listing()
        data = [VoiceObject(id=v.id, name=v.name, model=v.model, backend=v.backend, languages=v.languages,
                            sample_rate=v.sample_rate, neural=v.neural) for v in listing]
        return VoiceListResponse(object="list", data=data + await _registered(runner, clients))

    @api.post("/v1/audio/speech", responses=SPEECH_RESPONSES, openapi_extra=json_request_body(SpeechRequest))
    async def speech(request: Request) -> Response:
        body = await parse_json_body(request, SpeechRequest)
        note_usage(characters=len(body.input))
        if body.voice.startswith("voice_") or body.reference_audio:
            return await _clone(body, runner)
        allow_model(voices.table, body.model, voices.table.resolve(body.model, Task.tts))
        model, voice, language = await voices.choose(body.model, body.voice, body.language)
        allow_model(voices.table, body.model, model)  # the model that speaks the voice chosen
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
                                 media_type=MEDIA_TYPE, headers=headers)
        return RelayResponse(_relay(model, response), upstream, media_type=CONTENT_TYPES[body.response_format],
                             headers=headers)

    return api


async def _registered(runner: PipelineRunner, clients: ServiceClients) -> list[VoiceObject]:
    """Registered (cloned) voices, from the voice store of the clone route's vc model (none the key may not use)."""
    try:
        route_name, model = store_model(runner)
        response = await clients.get(model, "/v1/voices")
    except HarmonyError:
        return []
    records = RegisteredVoiceList.model_validate_json(response.content).data
    mine = await visible_voices([r.id for r in records])
    records = [r for r in records if r.id in mine]
    return [VoiceObject(id=r.id, object="voice", name=r.name, model=route_name, backend="clone", languages=[],
                        created_at=r.created_at, speech_seconds=r.speech_seconds, neural=False) for r in records]


async def _clone(body: SpeechRequest, runner: PipelineRunner) -> Response:
    """Speech in a registered voice, or in the voice of reference audio sent with the request."""
    route = runner.route(Task.tts, body.model)
    allow_route(runner.table, route, Task.tts, None)
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
        delta = SpeechAudioDelta(audio=base64.b64encode(state.output or b"").decode())
        return Response(sse_frame(delta) + sse_frame(SpeechAudioDone()), media_type=MEDIA_TYPE, headers=headers)
    return Response(state.output, media_type=CONTENT_TYPES[body.response_format], headers=headers)


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
                    yield sse_frame(SpeechAudioDelta(audio=base64.b64encode(chunk).decode()))
        yield sse_frame(SpeechAudioDone())
    except HarmonyError as exc:
        yield sse_frame(SpeechError(**exc.to_body()))
    finally:
        note_usage(audio_seconds_out=audio_seconds_of(CONTENT_TYPES[fmt], int(rate) if rate.isdigit() else None, sent))
