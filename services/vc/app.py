"""The voice service: speaker embeddings (task ``embed``), voice conversion and the voice store (task ``vc``)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from services.core.audio import AUDIO_FORMATS, CONTENT_TYPES, decode_audio, encode_audio, resample
from services.core.disconnect import until_disconnected
from services.core.errors import InvalidRequest
from services.core.metrics import Metrics
from services.core.service_app import LoadedModel, ModelRegistry, build_service
from services.core.specs import NamedModel, Task
from services.core.uploads import form_file, form_str, parse_bool, parse_number, read_form
from services.core.weights import cache_dir
from services.vc.speech import cut_speech, parse_segments, require_speech
from services.vc.types import ConversionJob
from services.vc.voices import VoiceRecord, VoiceStore

BACKENDS = {
    "resemblyzer": "services.vc.backends.resemblyzer:ResemblyzerEncoder",
    "world": "services.vc.backends.world:WorldConverter",
}
WORK_RATE = 24000          # the rate reference and source audio are decoded at
MIN_REFERENCE_S = 1.0      # a voice needs at least this much speech




def _flac(audio: np.ndarray, rate: int) -> bytes:
    return encode_audio(audio, rate, "flac")


def _pick(registry: ModelRegistry, name: str | None, task: Task) -> LoadedModel:
    if name:
        model = registry.get(name)
        if model.spec.task != task:
            raise InvalidRequest(f"model '{name}' is a {model.spec.task.value} model, not {task.value}",
                                 param="model", code="model_task_mismatch")
        return model
    for model in registry.unique():
        if model.spec.task == task:
            return registry.get(model.spec.name)
    raise InvalidRequest(f"this service has no {task.value} model", param="model")


def routes(registry: ModelRegistry, metrics: Metrics, store: VoiceStore | None) -> APIRouter:
    api = APIRouter()

    @api.post("/v1/audio/embeddings")
    async def embeddings(request: Request) -> dict[str, Any]:
        form = await read_form(request)
        model = _pick(registry, form_str(form, "model"), Task.embed)
        minimum = parse_number(form_str(form, "min_speech_seconds"), "min_speech_seconds", 0.5, 0.0, 60.0)
        return_speech = parse_bool(form_str(form, "return_speech"), "return_speech")
        speech, audio_seconds = await _speech_of_files(form)
        seconds = require_speech(speech, WORK_RATE, max(minimum, 0.1))
        speech16 = await asyncio.to_thread(resample, speech, WORK_RATE, model.backend.sample_rate)
        embedding = await until_disconnected(request, model.batcher.submit(speech16))
        metrics.count_request(model.spec.name, "ok")
        metrics.audio_seconds.labels(model.spec.name).inc(audio_seconds)
        body: dict[str, Any] = {"object": "list", "model": model.spec.name, "speech_seconds": round(seconds, 3),
                                "data": [{"object": "embedding", "index": 0,
                                          "embedding": [float(x) for x in embedding]}]}
        if return_speech:
            flac = await asyncio.to_thread(_flac, speech, WORK_RATE)
            body["speech"] = {"format": "flac", "sample_rate": WORK_RATE, "data": base64.b64encode(flac).decode()}
        return body

    @api.post("/v1/audio/conversions")
    async def conversions(request: Request) -> Response:
        form = await read_form(request)
        model = _pick(registry, form_str(form, "model"), Task.vc)
        fmt = form_str(form, "response_format", "wav") or "wav"
        if fmt not in AUDIO_FORMATS:
            raise InvalidRequest(f"'response_format' must be one of {', '.join(AUDIO_FORMATS)}",
                                 param="response_format")
        rate = int(parse_number(form_str(form, "sample_rate"), "sample_rate", WORK_RATE, 8000, 48000))
        target = await _target(form, model, store)
        data, _ = await form_file(form)
        source = await asyncio.to_thread(decode_audio, data, rate)
        converted = await until_disconnected(request, model.batcher.submit(
            ConversionJob(audio=source, sample_rate=rate, target=target)))
        encoded = await asyncio.to_thread(encode_audio, converted, rate, fmt)
        metrics.count_request(model.spec.name, "ok")
        metrics.audio_seconds.labels(model.spec.name).inc(len(source) / rate)
        return Response(encoded, media_type=CONTENT_TYPES[fmt], headers={"X-Sample-Rate": str(rate)})

    if store is None:
        return api

    @api.post("/v1/voices")
    async def register(request: Request) -> dict[str, Any]:
        form = await read_form(request)
        model = _pick(registry, form_str(form, "model"), Task.vc)
        name = (form_str(form, "name") or "").strip()
        if not name or len(name) > 128:
            raise InvalidRequest("'name' is required (1 to 128 characters)", param="name")
        try:
            embedding = [float(x) for x in json.loads(form_str(form, "embedding") or "")]
        except (ValueError, TypeError):
            raise InvalidRequest("'embedding' must be a JSON list of numbers", param="embedding") from None
        data, _ = await form_file(form, "reference")
        speech = await asyncio.to_thread(decode_audio, data, WORK_RATE)
        seconds = require_speech(speech, WORK_RATE, MIN_REFERENCE_S)
        stats = await asyncio.to_thread(model.backend.analyze, speech, WORK_RATE)
        record = VoiceRecord(id=store.new_id(), name=name, created_at=int(time.time()), embedding=embedding,
                             embedding_model=form_str(form, "embedding_model") or "", stats=stats,
                             converter=model.spec.name, speech_seconds=round(seconds, 3),
                             reference_files=int(parse_number(form_str(form, "reference_files"), "reference_files",
                                                             1, 1, 100)),
                             reference_sample_rate=WORK_RATE)
        flac = await asyncio.to_thread(_flac, speech, WORK_RATE)
        await asyncio.to_thread(store.add, record, flac)
        return record.public()

    @api.get("/v1/voices")
    async def list_voices() -> dict[str, Any]:
        return {"object": "list", "data": [r.public() for r in await asyncio.to_thread(store.list)]}

    @api.get("/v1/voices/{voice_id}")
    async def get_voice(voice_id: str) -> dict[str, Any]:
        return (await asyncio.to_thread(store.get, voice_id)).public()

    @api.delete("/v1/voices/{voice_id}")
    async def delete_voice(voice_id: str) -> dict[str, Any]:
        await asyncio.to_thread(store.delete, voice_id)
        return {"id": voice_id, "object": "voice.deleted", "deleted": True}

    return api


async def _speech_of_files(form) -> tuple[np.ndarray, float]:
    """Every uploaded ``file`` cut to its speech (``segments``: one list per file) and joined."""
    from starlette.datastructures import UploadFile

    files = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
    if not files:
        raise InvalidRequest("'file' is required: upload the audio as a file field", param="file",
                             code="missing_required_parameter")
    raw = form_str(form, "segments")
    per_file: list[Any] = [None] * len(files)
    if raw:
        try:
            data = json.loads(raw)
        except ValueError:
            raise InvalidRequest("'segments' must be JSON", param="segments") from None
        if len(files) == 1 and data and isinstance(data[0], dict):
            data = [data]
        if not isinstance(data, list) or len(data) != len(files):
            raise InvalidRequest("'segments' must hold one list of segments per file", param="segments")
        per_file = [parse_segments(json.dumps(d)) for d in data]
    pieces, total = [], 0.0
    for upload, segments in zip(files, per_file):
        audio = await asyncio.to_thread(decode_audio, await upload.read(), WORK_RATE)
        total += len(audio) / WORK_RATE
        speech = cut_speech(audio, WORK_RATE, segments)
        if speech.size:
            pieces.append(speech)
    joined = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, dtype=np.float32)
    return joined, total


async def _target(form, model: LoadedModel, store: VoiceStore | None) -> Any:
    """The target speaker's statistics: a registered voice, statistics given as JSON, or reference audio."""
    voice_id = form_str(form, "voice")
    stats = form_str(form, "stats")
    if voice_id:
        if store is None:
            raise InvalidRequest("this service keeps no voices", param="voice")
        record = await asyncio.to_thread(store.get, voice_id)
        if record.converter != model.spec.name:
            raise InvalidRequest(f"voice '{voice_id}' was analysed for converter '{record.converter}'",
                                 param="voice", code="voice_model_mismatch")
        return record.stats
    if stats:
        try:
            return json.loads(stats)
        except ValueError:
            raise InvalidRequest("'stats' must be JSON", param="stats") from None
    if form.get("reference") is None:
        raise InvalidRequest("give the target as 'voice' (a registered voice id), 'reference' (audio) or 'stats'",
                             param="voice", code="missing_required_parameter")
    data, _ = await form_file(form, "reference")
    segments = parse_segments(form_str(form, "reference_segments"))
    audio = await asyncio.to_thread(decode_audio, data, WORK_RATE)
    speech = cut_speech(audio, WORK_RATE, segments)
    require_speech(speech, WORK_RATE, MIN_REFERENCE_S)
    return await asyncio.to_thread(model.backend.analyze, speech, WORK_RATE)


def create_vc_app(models: list[NamedModel], max_upload_bytes: int = 25 * 1024 * 1024):
    converter = next((spec for spec in models if spec.task == Task.vc), None)
    store = VoiceStore(str(converter.options.get("voice_store", cache_dir() / "voices"))) if converter else None
    return build_service("vc", models, BACKENDS, lambda registry, metrics: routes(registry, metrics, store),
                         max_upload_bytes)
