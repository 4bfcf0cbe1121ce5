"""The STT model service: Whisper models behind batchers, over HTTP."""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from services.core.audio import decode_audio
from services.core.disconnect import until_disconnected
from services.core.errors import HarmonyError, InvalidRequest
from services.core.metrics import Metrics
from services.core.service_app import LoadedModel, ModelRegistry, build_service
from services.core.specs import NamedModel
from services.core.uploads import form_file, form_str, parse_bool, parse_number, read_form
from services.stt.service import TranscribeOptions, assemble, transcribe_windows
from services.stt.types import SAMPLE_RATE, TranscriptionResult

BACKENDS = {"faster-whisper": "services.stt.backends.faster_whisper:FasterWhisperBackend"}


def routes(registry: ModelRegistry, metrics: Metrics) -> APIRouter:
    api = APIRouter()

    @api.post("/v1/audio/transcriptions")
    async def transcribe(request: Request):
        form = await read_form(request)
        model = registry.get(form_str(form, "model"))
        task = form_str(form, "task", "transcribe")
        if task not in ("transcribe", "translate"):
            raise InvalidRequest("'task' must be transcribe or translate", param="task")
        language = form_str(form, "language") or None
        opts = TranscribeOptions(
            task=task, language=language.lower() if language else None, prompt=form_str(form, "prompt") or None,
            temperature=parse_number(form_str(form, "temperature"), "temperature", 0.0, 0.0, 1.0),
            word_timestamps=parse_bool(form_str(form, "word_timestamps"), "word_timestamps"),
            vad_filter=parse_bool(form_str(form, "vad_filter"), "vad_filter"))
        stream = parse_bool(form_str(form, "stream"), "stream")
        data, _ = await form_file(form)
        model.backend.check_request(opts.task, opts.language)
        audio = await asyncio.to_thread(decode_audio, data, SAMPLE_RATE)
        metrics.audio_seconds.labels(model.spec.name).inc(len(audio) / SAMPLE_RATE)
        if stream:
            return StreamingResponse(_ndjson(model, audio, opts, metrics), media_type="application/x-ndjson")
        try:
            result = await until_disconnected(request, _collect(model, audio, opts))
        except HarmonyError:
            metrics.count_request(model.spec.name, "error")
            raise
        metrics.count_request(model.spec.name, "ok")
        return result

    return api


async def _collect(model: LoadedModel, audio: np.ndarray, opts: TranscribeOptions) -> TranscriptionResult:
    chunks = [chunk async for chunk in transcribe_windows(model, audio, opts)]
    return assemble(model.spec.name, opts, audio, chunks)


async def _ndjson(model: LoadedModel, audio: np.ndarray, opts: TranscribeOptions, metrics: Metrics
                  ) -> AsyncIterator[bytes]:
    """One line per window as it is ready, then the whole result; an error ends the stream explicitly."""
    chunks = []
    try:
        async for chunk in transcribe_windows(model, audio, opts):
            chunks.append(chunk)
            for segment in chunk.segments:
                yield (json.dumps({"type": "segment", "segment": segment.model_dump(),
                                   "language": chunk.language}) + "\n").encode()
        result = assemble(model.spec.name, opts, audio, chunks)
        metrics.count_request(model.spec.name, "ok")
        yield (json.dumps({"type": "done", "result": result.model_dump()}) + "\n").encode()
    except HarmonyError as exc:
        metrics.count_request(model.spec.name, "error")
        yield (json.dumps({"type": "error", "status": exc.status_code, **exc.to_body()}) + "\n").encode()


def create_stt_app(models: list[NamedModel], max_upload_bytes: int = 25 * 1024 * 1024):
    return build_service("stt", models, BACKENDS, routes, max_upload_bytes)
