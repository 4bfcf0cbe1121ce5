"""The VAD model service: speech segments of an upload, Silero VAD behind a batcher, over HTTP."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from services.core.audio import decode_audio, encode_audio, resample
from services.core.errors import HarmonyError
from services.core.metrics import Metrics
from services.core.protocols import VadBackend
from services.core.service_app import LoadedModel, ModelRegistry, create_service_app, load_models
from services.core.specs import NamedModel, Task
from services.core.uploads import form_file, read_form
from services.core.wire import EncodedAudio, SpeechSegment, VadParams, VadResult
from services.vad.segments import cut_speech, options_of, speech_segments


def routes(registry: ModelRegistry[VadBackend], metrics: Metrics) -> APIRouter:
    api = APIRouter()

    @api.post("/v1/audio/vad")
    async def vad(request: Request) -> VadResult:
        form = await read_form(request)
        params = VadParams.from_form(form)
        model = registry.get(params.model)
        data, _ = await form_file(form)
        rate = model.backend.sample_rate
        audio = await asyncio.to_thread(decode_audio, data, rate, max_seconds=model.spec.limits.audio_seconds(Task.vad))
        metrics.audio_seconds.labels(model.spec.name).inc(len(audio) / rate)
        try:
            probs = await model.batcher.submit(audio)
        except HarmonyError:
            metrics.count_request(model.spec.name, "error")
            raise
        body = await asyncio.to_thread(_answer, model, audio, probs, params)
        metrics.count_request(model.spec.name, "ok")
        return body

    return api


def _answer(model: LoadedModel[VadBackend], audio: np.ndarray, probs: np.ndarray, params: VadParams) -> VadResult:
    rate = model.backend.sample_rate
    segments = speech_segments(probs, len(audio), options_of(params), sample_rate=rate,
                               frame_samples=model.backend.frame_samples)
    result = VadResult(model=model.spec.name, duration=round(len(audio) / rate, 3),
                       segments=[SpeechSegment(**s) for s in segments],
                       speech_seconds=round(sum(s["end"] - s["start"] for s in segments), 3))
    if params.return_speech:
        speech = resample(cut_speech(audio, rate, [(s["start"], s["end"]) for s in segments]), rate,
                          params.speech_sample_rate)
        flac = encode_audio(speech, params.speech_sample_rate, "flac")
        result.speech = EncodedAudio(format="flac", sample_rate=params.speech_sample_rate,
                                     data=base64.b64encode(flac).decode())
    return result


def create_vad_app(models: list[NamedModel], max_upload_bytes: int = 25 * 1024 * 1024) -> FastAPI:
    metrics = Metrics("vad")
    registry: ModelRegistry[VadBackend] = load_models(Task.vad, models, metrics)
    return create_service_app("vad", [registry], metrics, [routes(registry, metrics)], max_upload_bytes)
