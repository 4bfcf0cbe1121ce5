"""POST /v1/audio/transcriptions and /v1/audio/translations: validate, forward to the STT service, render."""

from __future__ import annotations

import json
from typing import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import TypeAdapter
from services.auth.guard import note_usage
from services.core.disconnect import until_disconnected
from services.core.errors import HarmonyError, InvalidRequest
from services.core.specs import Task
from services.core.uploads import form_file, form_list, form_str, read_form
from services.core.wire import DoneEvent, SegmentEvent, SttEvent, TranscriptionParams, TranscriptionResult
from services.router.clients import ServiceClients
from services.router.routing import ModelTable, ServedModel
from services.router.transcript_formats import RESPONSE_FORMATS, render

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
    fields = params.form()
    files = {"file": (filename, data, "application/octet-stream")}
    if params.stream:
        return StreamingResponse(_sse(clients, model, fields, files), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    response = await until_disconnected(
        request, clients.post(model, "/v1/audio/transcriptions", data=fields, files=files))
    result = TranscriptionResult.model_validate(response.json())
    note_usage(audio_seconds_in=result.duration)
    return render(result, response_format, granularities)


def _event(payload: dict) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


async def _sse(clients: ServiceClients, model: ServedModel, fields: dict, files: dict) -> AsyncIterator[bytes]:
    """Server-sent events in OpenAI's shape: transcript.text.delta per segment, then transcript.text.done."""
    try:
        async with clients.stream(model, "/v1/audio/transcriptions", data=fields, files=files) as response:
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = STT_EVENT.validate_json(line)
                if isinstance(event, SegmentEvent):
                    yield _event({"type": "transcript.text.delta", "delta": event.segment.text})
                elif isinstance(event, DoneEvent):
                    note_usage(audio_seconds_in=event.result.duration)
                    yield _event({"type": "transcript.text.done", "text": event.result.text,
                                  "usage": {"type": "duration", "seconds": event.result.duration}})
                else:
                    yield _event({"type": "error", "error": event.error})
                    return
    except HarmonyError as exc:
        yield _event({"type": "error", **exc.to_body()})
