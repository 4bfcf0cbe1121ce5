"""POST /v1/audio/transcriptions and /v1/audio/translations: validate, forward to the STT service, render."""

from __future__ import annotations

import json
from typing import AsyncIterator

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import TypeAdapter, ValidationError
from services.auth.estimates import covered, upload_seconds
from services.auth.guard import note_usage, reserve_audio
from services.core.contracts.errors import HarmonyError, InvalidRequest, UpstreamError, error_from_body
from services.core.contracts.specs import Task
from services.core.http.uploads import form_file, form_list, form_str, read_form
from services.core.contracts.wire import (DoneEvent, ErrorEvent, SegmentEvent, SttEvent, TranscriptionParams,
                                TranscriptionResult)
from services.router.upstream.clients import ServiceClients, transport_errors
from services.router.upstream.relay import RelayResponse, Upstream
from services.router.routing import ModelTable, ServedModel
from services.router.api.transcript_formats import RESPONSE_FORMATS, render, token_usage

GRANULARITIES = ("word", "segment")
STT_EVENT: TypeAdapter[SttEvent] = TypeAdapter(SttEvent)


def routes(table: ModelTable, clients: ServiceClients) -> APIRouter:
    api = APIRouter(tags=["audio"])

    @api.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        return await _handle(request, table, clients, task="transcribe")

    @api.post("/v1/audio/translations")
    async def translations(request: Request) -> Response:
        return await _handle(request, table, clients, task="translate")

    return api


async def _handle(request: Request, table: ModelTable, clients: ServiceClients, task: str) -> Response:
    form = await read_form(request)
    model = table.resolve(form_str(form, "model"), Task.stt)
    response_format = form_str(form, "response_format", "json") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise InvalidRequest(f"'response_format' must be one of {', '.join(RESPONSE_FORMATS)}",
                             param="response_format")
    granularities = form_list(form, "timestamp_granularities")
    for value in granularities:
        if value not in GRANULARITIES:
            raise InvalidRequest(f"'timestamp_granularities[]' values must be word or segment, not '{value}'",
                                 param="timestamp_granularities")
    if granularities and response_format != "verbose_json":
        raise InvalidRequest("timestamp_granularities needs response_format=verbose_json",
                             param="timestamp_granularities")
    params = TranscriptionParams.from_form(form).model_copy(update={
        "model": model.name, "task": task, "word_timestamps": "word" in granularities})
    if task == "translate":
        params.language = None
    data, filename = await form_file(form)
    limit = model.spec.limits.audio_seconds(Task.stt)
    held = await reserve_audio(lambda: upload_seconds(data, limit))  # before any work: the key's quota decides
    files = {"file": (filename, data, "application/octet-stream")}

    def fields(cap: float | None) -> dict[str, str]:
        return params.model_copy(update={"max_audio_seconds": cap}).form()

    if params.stream:
        return await covered(lambda cap: _stream(clients, model, fields(cap), files), held, limit, _hold_more)
    response = await covered(lambda cap: clients.post(model, "/v1/audio/transcriptions", data=fields(cap),
                                                      files=files), held, limit, _hold_more)
    result = TranscriptionResult.model_validate(response.json())
    note_usage(audio_seconds_in=result.duration)
    return render(result, response_format, granularities)


async def _hold_more(seconds: float) -> None:
    await reserve_audio(lambda: seconds)


def _event(payload: dict) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


async def _stream(clients: ServiceClients, model: ServedModel, fields: dict, files: dict) -> Response:
    """Ask the STT service and wait for its first line before answering: an error up to then (the service's
    HTTP error, or an error as its first line) is answered with its own status and OpenAI body."""
    upstream = Upstream()
    response = await upstream.open(clients.stream(model, "/v1/audio/transcriptions", data=fields, files=files))
    try:
        lines = _events(model, response)
        first = await anext(lines, None)
        if first is None:
            raise UpstreamError(f"model '{model.name}' ended the stream without a result")
        if isinstance(first, ErrorEvent):
            raise error_from_body(first.status, {"error": first.error})
    except BaseException:
        await upstream.aclose()
        raise
    return RelayResponse(_sse(model, first, lines), upstream, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache"})


async def _events(model: ServedModel, response: httpx.Response) -> AsyncIterator[SttEvent]:
    with transport_errors(model):
        async for line in response.aiter_lines():
            if line.strip():
                try:
                    yield STT_EVENT.validate_json(line)
                except ValidationError:
                    raise UpstreamError(f"model '{model.name}' sent an event that is not its contract") from None


async def _sse(model: ServedModel, first: SttEvent | None, rest: AsyncIterator[SttEvent]) -> AsyncIterator[bytes]:
    """Server-sent events in OpenAI's shape: transcript.text.delta per segment, then transcript.text.done;
    a failure after the stream began is an ``error`` event, and so is a stream that ends without a result."""
    try:
        event = first
        while event is not None:
            if isinstance(event, SegmentEvent):
                yield _event({"type": "transcript.text.delta", "delta": event.segment.text})
            elif isinstance(event, DoneEvent):
                note_usage(audio_seconds_in=event.result.duration)
                yield _event({"type": "transcript.text.done", "text": event.result.text,
                              "usage": token_usage(event.result)})
                return
            else:
                yield _event({"type": "error", "error": event.error})
                return
            event = await anext(rest, None)
        raise UpstreamError(f"model '{model.name}' ended the stream without a result")
    except HarmonyError as exc:
        yield _event({"type": "error", **exc.to_body()})
