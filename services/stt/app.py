"""The STT model service: Whisper models behind batchers, over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import StreamingResponse

from services.core.audio import decode_audio
from services.core.contracts.errors import HarmonyError
from services.core.contracts.specs import NamedModel, Task
from services.core.contracts.wire import (
    DoneEvent,
    ErrorEvent,
    SegmentEvent,
    SttEvent,
    TranscriptionParams,
    TranscriptionResult,
    parse_spans,
)
from services.core.http.service_app import LoadedModel, ModelRegistry, create_service_app, load_models
from services.core.http.uploads import form_file, read_form
from services.core.runtime.metrics import Metrics
from services.core.tasks.protocols import SttBackend
from services.stt.guards import FALLBACK_REASONS
from services.stt.service import TranscribeOptions, assemble, check_request, transcribe_windows
from services.stt.types import SAMPLE_RATE


def routes(registry: ModelRegistry[SttBackend], metrics: Metrics) -> APIRouter:
    api = APIRouter()

    @api.post("/v1/audio/transcriptions")
    async def transcribe(request: Request):
        form = await read_form(request)
        params = TranscriptionParams.from_form(form)
        model = registry.get(params.model)
        opts = TranscribeOptions(task=params.task, language=params.language, prompt=params.prompt,
                                 temperature=params.temperature, word_timestamps=params.word_timestamps,
                                 vad_filter=params.vad_filter, fit_context=params.fit_context,
                                 logprobs=params.logprobs, languages=_languages(params.languages),
                                 spans=parse_spans(params.spans, "spans"))
        data, _ = await form_file(form)
        check_request(model, opts)
        limit = model.spec.limits.audio_seconds(Task.stt)  # or less: what the router's quota hold covers
        audio = await asyncio.to_thread(decode_audio, data, SAMPLE_RATE,
                                        max_seconds=min(limit, params.max_audio_seconds or limit))
        metrics.audio_seconds.labels(model.spec.name).inc(len(audio) / SAMPLE_RATE)
        if params.stream:
            return StreamingResponse(_ndjson(model, audio, opts, metrics), media_type="application/x-ndjson")
        try:
            result = await _collect(model, audio, opts)
        except HarmonyError:
            metrics.count_request(model.spec.name, "error")
            raise
        metrics.count_request(model.spec.name, "ok")
        return result

    return api


def _languages(value: str | None) -> tuple[str, ...] | None:
    codes = tuple(code.strip().lower() for code in (value or "").split(",") if code.strip())
    return codes or None


async def _collect(model: LoadedModel[SttBackend], audio: np.ndarray, opts: TranscribeOptions) -> TranscriptionResult:
    chunks = [chunk async for chunk in transcribe_windows(model, audio, opts)]
    return assemble(model.spec.name, opts, audio, chunks)


async def _ndjson(model: LoadedModel[SttBackend], audio: np.ndarray, opts: TranscribeOptions, metrics: Metrics
                  ) -> AsyncIterator[bytes]:
    """One line per window as it is ready, then the whole result; an error ends the stream explicitly."""
    chunks = []
    try:
        async for chunk in transcribe_windows(model, audio, opts):
            chunks.append(chunk)
            for segment in chunk.segments:
                yield _line(SegmentEvent(segment=segment, language=chunk.language))
        result = assemble(model.spec.name, opts, audio, chunks)
        metrics.count_request(model.spec.name, "ok")
        yield _line(DoneEvent(result=result))
    except HarmonyError as exc:
        metrics.count_request(model.spec.name, "error")
        yield _line(ErrorEvent(status=exc.status_code, **exc.to_body()))


def _line(event: SttEvent) -> bytes:
    return (event.model_dump_json() + "\n").encode()


def create_stt_app(models: list[NamedModel], max_upload_bytes: int = 25 * 1024 * 1024) -> FastAPI:
    metrics = Metrics("stt")
    for model in models:  # the packing and guard counters exist at 0 from the start: their rates are never absent
        metrics.packed_windows.labels(model.name)
        metrics.pack_fallbacks.labels(model.name)
        for reason in FALLBACK_REASONS:
            metrics.stt_fallbacks.labels(model.name, reason)
    registry: ModelRegistry[SttBackend] = load_models(Task.stt, models, metrics)
    return create_service_app("stt", [registry], metrics, [routes(registry, metrics)], max_upload_bytes)
