"""The TTS model service: voices behind batchers; encoded audio streamed sentence by sentence."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import numpy as np
from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from services.core.audio import CONTENT_TYPES, AudioFormat, StreamingEncoder, resample
from services.core.errors import InvalidRequest
from services.core.metrics import Metrics
from services.core.service_app import LoadedModel, ModelRegistry, build_service
from services.core.specs import NamedModel
from services.tts.service import synthesize_sentences
from pydantic import BaseModel, Field

BACKENDS = {
    "piper": "services.tts.backends.piper:PiperBackend",
    "espeak": "services.tts.backends.espeak:EspeakBackend",
    "kokoro": "services.tts.backends.kokoro:KokoroBackend",
}




class SynthesisRequest(BaseModel):
    """What the router sends a TTS service: a concrete model and the backend's own voice id."""

    model: str
    input: str = Field(..., min_length=1, max_length=4096)
    voice: str
    language: str = "en"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    response_format: AudioFormat = "mp3"
    sample_rate: int | None = Field(None, ge=8000, le=48000)


def routes(registry: ModelRegistry, metrics: Metrics) -> APIRouter:
    api = APIRouter()

    @api.get("/v1/audio/voices")
    async def voices() -> dict:
        data = [v.model_dump() for m in registry.unique() if m.ready for v in m.backend.voices()]
        return {"object": "list", "data": data}

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


async def _encoded(model: LoadedModel, body: SynthesisRequest, rate: int, metrics: Metrics) -> AsyncIterator[bytes]:
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


def create_tts_app(models: list[NamedModel], max_upload_bytes: int = 25 * 1024 * 1024):
    return build_service("tts", models, BACKENDS, routes, max_upload_bytes)
