"""The VAD model service: speech segments of an upload, Silero VAD behind a batcher, over HTTP."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
from fastapi import APIRouter, FastAPI, Request

from services.core.audio import decode_audio, encode_audio, pcm16_to_float, resample
from services.core.contracts.errors import HarmonyError, InvalidRequest
from services.core.contracts.specs import NamedModel, Task
from services.core.contracts.wire import (
    EncodedAudio,
    SpeechSegment,
    VadParams,
    VadResult,
    VadStreamRequest,
    VadStreamResult,
)
from services.core.http.service_app import LoadedModel, ModelRegistry, create_service_app, load_models
from services.core.http.uploads import form_file, read_form
from services.core.runtime.metrics import Metrics
from services.core.tasks.jobs import VadContinuation, VadContinued
from services.core.tasks.protocols import VadBackend
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
        limit = model.spec.limits.audio_seconds(Task.vad)  # or less: what the router's quota hold covers
        audio = await asyncio.to_thread(decode_audio, data, rate,
                                        max_seconds=min(limit, params.max_audio_seconds or limit))
        metrics.audio_seconds.labels(model.spec.name).inc(len(audio) / rate)
        try:
            probs = await model.batcher.submit(audio)
        except HarmonyError:
            metrics.count_request(model.spec.name, "error")
            raise
        body = await asyncio.to_thread(_answer, model, audio, probs, params)
        metrics.count_request(model.spec.name, "ok")
        return body

    @api.post("/v1/audio/vad/stream")
    async def vad_stream(body: VadStreamRequest) -> VadStreamResult:
        """A live stream's next frames from its carried state (the router's realtime sessions), batched frame by
        frame with every other stream's and upload's frames."""
        model = registry.get(body.model)
        backend = model.capabilities.streaming
        if backend is None:
            raise InvalidRequest(f"model '{model.spec.name}' cannot continue a stream", param="model")
        item = _continuation(body, backend.frame_samples, backend.stream_state_size)
        metrics.audio_seconds.labels(model.spec.name).inc(len(item.audio) / backend.sample_rate)
        out: VadContinued = await model.batcher.submit(item)
        return VadStreamResult(model=model.spec.name, frame_samples=backend.frame_samples,
                               sample_rate=backend.sample_rate,
                               probabilities=[round(float(p), 4) for p in out.probs],
                               state=base64.b64encode(out.state.astype("<f4").tobytes()).decode())

    return api


def _continuation(body: VadStreamRequest, frame_samples: int, state_size: int) -> VadContinuation:
    """The request's audio and state, checked: base64, whole frames of 16-bit PCM, finite float32 state."""
    try:
        pcm = base64.b64decode(body.audio, validate=True)
        raw_state = base64.b64decode(body.state, validate=True) if body.state else None
    except ValueError:
        raise InvalidRequest("'audio' and 'state' must be base64", param="audio") from None
    if not pcm or len(pcm) % (2 * frame_samples):
        raise InvalidRequest(f"'audio' must be whole frames of {frame_samples} 16-bit samples", param="audio")
    state = None
    if raw_state is not None:
        if len(raw_state) != 4 * state_size:
            raise InvalidRequest("'state' is not a state this service gave", param="state")
        state = np.frombuffer(raw_state, dtype="<f4").astype(np.float32)
        if not np.all(np.isfinite(state)):
            raise InvalidRequest("'state' is not a state this service gave", param="state")
    audio = pcm16_to_float(pcm)
    return VadContinuation(audio, state)


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
