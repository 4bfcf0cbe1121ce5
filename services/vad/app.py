"""The VAD model service: speech segments of an upload, Silero VAD behind a batcher, over HTTP."""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi import APIRouter, Request
from services.core.audio import decode_audio
from services.core.disconnect import until_disconnected
from services.core.errors import HarmonyError
from services.core.metrics import Metrics
from services.core.service_app import LoadedModel, ModelRegistry, build_service
from services.core.specs import NamedModel
from services.core.uploads import form_file, form_str, read_form
from services.vad.segments import FRAME_SAMPLES, SAMPLE_RATE, VadOptions, parse_options, speech_segments

BACKENDS = {"silero": "services.vad.backends.silero:SileroVadBackend"}




def routes(registry: ModelRegistry, metrics: Metrics) -> APIRouter:
    api = APIRouter()

    @api.post("/v1/audio/vad")
    async def vad(request: Request) -> dict:
        form = await read_form(request)
        model = registry.get(form_str(form, "model"))
        options = parse_options(lambda name: form_str(form, name))
        data, _ = await form_file(form)
        rate = getattr(model.backend, "sample_rate", SAMPLE_RATE)
        audio = await asyncio.to_thread(decode_audio, data, rate)
        metrics.audio_seconds.labels(model.spec.name).inc(len(audio) / rate)
        try:
            probs = await until_disconnected(request, model.batcher.submit(audio))
        except HarmonyError:
            metrics.count_request(model.spec.name, "error")
            raise
        body = await asyncio.to_thread(_answer, model, audio, rate, probs, options)
        metrics.count_request(model.spec.name, "ok")
        return body

    return api


def _answer(model: LoadedModel, audio: np.ndarray, rate: int, probs: np.ndarray, options: VadOptions) -> dict:
    frame = getattr(model.backend, "frame_samples", FRAME_SAMPLES)
    segments = speech_segments(probs, len(audio), options, sample_rate=rate, frame_samples=frame)
    return {"object": "vad", "model": model.spec.name, "duration": round(len(audio) / rate, 3),
            "segments": segments, "speech_seconds": round(sum(s["end"] - s["start"] for s in segments), 3)}


def create_vad_app(models: list[NamedModel], max_upload_bytes: int = 25 * 1024 * 1024):
    return build_service("vad", models, BACKENDS, routes, max_upload_bytes)
