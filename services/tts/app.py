"""The TTS model service: voices behind batchers; encoded audio streamed sentence by sentence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
from fastapi import APIRouter, FastAPI
from fastapi.responses import StreamingResponse

from services.core.audio import CONTENT_TYPES, StreamingEncoder, resample
from services.core.contracts.errors import InvalidRequest
from services.core.contracts.specs import NamedModel, Task
from services.core.contracts.wire import SynthesisRequest, VoiceList
from services.core.http.service_app import LoadedModel, ModelRegistry, create_service_app, load_models
from services.core.runtime.metrics import Metrics
from services.core.tasks.protocols import TtsBackend
from services.tts.service import synthesize_sentences


def routes(registry: ModelRegistry[TtsBackend], metrics: Metrics) -> APIRouter:
    api = APIRouter()

    @api.get("/v1/audio/voices")
    async def voices() -> VoiceList:
        return VoiceList(data=[v for m in registry.unique() if m.ready for v in m.backend.voices()])

    @api.post("/v1/audio/speech")
    async def speech(body: SynthesisRequest) -> StreamingResponse:
        model = registry.get(body.model)
        known = {v.backend_voice for v in model.backend.voices()}
        if body.voice not in known:
            raise InvalidRequest(f"model '{model.spec.name}' has no voice '{body.voice}'", param="voice",
                                 code="unknown_voice")
        rate = body.sample_rate or model.backend.sample_rate
        stream = _encoded(model, body, rate, metrics)
        first = await anext(stream)  # errors before the first byte are proper HTTP errors
        return StreamingResponse(_prepend(first, stream), media_type=CONTENT_TYPES[body.response_format],
                                 headers={"X-Sample-Rate": str(rate)})

    return api


async def _encoded(model: LoadedModel[TtsBackend], body: SynthesisRequest, rate: int,
                   metrics: Metrics) -> AsyncIterator[bytes]:
    encoder = StreamingEncoder(body.response_format, rate)
    native = model.backend.sample_rate
    seconds = 0.0
    try:
        async for audio in synthesize_sentences(model, body.input, body.voice, body.language, body.speed):
            if rate != native:
                audio = resample(audio, native, rate)
            seconds += len(audio) / rate
            chunk = await asyncio.to_thread(encoder.push, np.asarray(audio, dtype=np.float32))
            yield chunk
        yield await asyncio.to_thread(encoder.close)
        metrics.count_request(model.spec.name, "ok")
        metrics.audio_seconds.labels(model.spec.name).inc(seconds)
    except BaseException:
        metrics.count_request(model.spec.name, "error")
        raise


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        if chunk:
            yield chunk


def create_tts_app(models: list[NamedModel], max_upload_bytes: int = 25 * 1024 * 1024) -> FastAPI:
    metrics = Metrics("tts")
    registry: ModelRegistry[TtsBackend] = load_models(Task.tts, models, metrics)
    return create_service_app("tts", [registry], metrics, [routes(registry, metrics)], max_upload_bytes)
