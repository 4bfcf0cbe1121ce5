"""POST /v1/audio/transcriptions and /v1/audio/translations: validate, forward to the STT service, render."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from services.auth.estimates import covered, upload_seconds
from services.auth.guard import note_usage, reserve_audio
from services.core.contracts.errors import HarmonyError, InvalidRequest, UpstreamError, error_from_body
from services.core.contracts.specs import Task
from services.core.contracts.wire import (
    STT_EVENT,
    DoneEvent,
    ErrorEvent,
    SegmentEvent,
    SttEvent,
    TranscriptionParams,
    TranscriptionResult,
)
from services.core.http.form_body import form_request_body
from services.core.http.sse import MEDIA_TYPE, sse_frame
from services.core.http.unsupported import refuse_unsupported
from services.router.access import allow_model
from services.router.api import diarization
from services.router.api.protocol.diarization import TranscriptionDiarized
from services.router.api.protocol.transcription import (
    DIARIZE_FIELDS,
    RESPONSES,
    TRANSCRIBE_ONLY,
    Transcription,
    TranscriptionError,
    TranscriptionForm,
    TranscriptionTextDeltaEvent,
    TranscriptionTextDoneEvent,
    TranscriptionVerbose,
)
from services.router.api.transcript_formats import logprobs_of, render, token_usage
from services.router.pipelines import PipelineRunner
from services.router.routing import ModelTable, ServedModel
from services.router.upstream.clients import ServiceClients, transport_errors
from services.router.upstream.relay import RelayResponse, Upstream

ANSWERS = {"response_model": TranscriptionVerbose | TranscriptionDiarized | Transcription, "responses": RESPONSES,
           "openapi_extra": form_request_body(TranscriptionForm)}


def routes(table: ModelTable, clients: ServiceClients, runner: PipelineRunner | None = None) -> APIRouter:
    api = APIRouter(tags=["audio"])

    async def handle(form: TranscriptionForm, task: str) -> Response:
        route = table.named_route(form.model, Task.stt)  # the diarize route (gpt-4o-transcribe-diarize)
        if route is not None and runner is not None:
            return await diarization.handle(form, route, runner, clients, task)
        return await _handle(form, table, clients, task=task)

    @api.post("/v1/audio/transcriptions", **ANSWERS)  # type: ignore[arg-type]
    async def transcriptions(request: Request) -> Response:
        return await handle(await TranscriptionForm.read(request), "transcribe")

    @api.post("/v1/audio/translations", **ANSWERS)  # type: ignore[arg-type]
    async def translations(request: Request) -> Response:
        return await handle(await TranscriptionForm.read(request), "translate")

    return api


async def _handle(form: TranscriptionForm, table: ModelTable, clients: ServiceClients, task: str) -> Response:
    model = table.resolve(form.model, Task.stt)
    allow_model(table, form.model, model)  # 403 when the request's API key may not use it
    params = _params(form, model, task)
    if form.response_format == "diarized_json":
        raise InvalidRequest(f"response_format 'diarized_json' needs a diarization model (gpt-4o-transcribe-diarize), "
                             f"not '{form.model}'", param="response_format", code="unsupported_value")
    data, filename = await form.file.read(), form.file.filename or "audio"
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
    return render(result, form.response_format, form.timestamp_granularities, logprobs=params.logprobs)


def _params(form: TranscriptionForm, model: ServedModel, task: str) -> TranscriptionParams:
    """The request as the STT service takes it; each OpenAI field honoured, or refused by name (400, or let
    through under ``server.ignore_unsupported``): see ``TranscriptionForm``."""
    sent = form.model_fields_set
    for name in (TRANSCRIBE_ONLY if task == "translate" else DIARIZE_FIELDS):
        if name in sent:
            refuse_unsupported(name, f"'{name}' is not supported by {task}s with model '{model.name}'")
    language, languages = form.language_choice(task)
    return TranscriptionParams(
        model=model.name, task=task, language=language, prompt=form.whisper_prompt(task), temperature=form.temperature,
        word_timestamps="word" in form.timestamp_granularities, stream=form.stream, fit_context=form.fit_context,
        vad_filter=form.vad_filter or (task == "transcribe" and form.uses_vad_chunking()),
        logprobs="logprobs" in form.include and task == "transcribe", languages=languages)


async def _hold_more(seconds: float) -> None:
    await reserve_audio(lambda: seconds)


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
    return RelayResponse(_sse(model, first, lines, fields.get("logprobs") == "true"), upstream, media_type=MEDIA_TYPE,
                         headers={"Cache-Control": "no-cache"})


async def _events(model: ServedModel, response: httpx.Response) -> AsyncIterator[SttEvent]:
    with transport_errors(model):
        async for line in response.aiter_lines():
            if line.strip():
                try:
                    yield STT_EVENT.validate_json(line)
                except ValidationError:
                    raise UpstreamError(f"model '{model.name}' sent an event that is not its contract") from None


async def _sse(model: ServedModel, first: SttEvent | None, rest: AsyncIterator[SttEvent], logprobs: bool
               ) -> AsyncIterator[bytes]:
    """Server-sent events in OpenAI's shape: transcript.text.delta per segment, then transcript.text.done;
    a failure after the stream began is an ``error`` event, and so is a stream that ends without a result."""
    try:
        event = first
        while event is not None:
            if isinstance(event, SegmentEvent):
                yield sse_frame(TranscriptionTextDeltaEvent.model_validate(
                    {"type": "transcript.text.delta", "delta": event.segment.text,
                     **({"logprobs": logprobs_of([event.segment])} if logprobs else {})}))
            elif isinstance(event, DoneEvent):
                note_usage(audio_seconds_in=event.result.duration)
                yield sse_frame(TranscriptionTextDoneEvent.model_validate(
                    {"type": "transcript.text.done", "text": event.result.text, "usage": token_usage(event.result),
                     **({"logprobs": logprobs_of(event.result.segments)} if logprobs else {})}))
                return
            else:
                yield sse_frame(TranscriptionError(error=event.error))
                return
            event = await anext(rest, None)
        raise UpstreamError(f"model '{model.name}' ended the stream without a result")
    except HarmonyError as exc:
        yield sse_frame(TranscriptionError(**exc.to_body()))
