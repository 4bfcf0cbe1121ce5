"""The voice service: speaker embeddings (task ``embed``), voice conversion and the voice store (task ``vc``)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from starlette.datastructures import FormData, UploadFile

from services.core.audio import CONTENT_TYPES, decode_audio, encode_audio, resample
from services.core.contracts.errors import InvalidRequest
from services.core.contracts.specs import ConfigError, HarmonyConfig, NamedModel, Task
from services.core.contracts.wire import (
    ConversionParams,
    EmbeddingData,
    EmbeddingParams,
    EmbeddingResult,
    EmbeddingWindow,
    EmbeddingWindowsParams,
    EmbeddingWindowsResult,
    RegisteredVoice,
    RegisteredVoiceList,
    VoiceDeleted,
    VoiceRegistration,
    parse_embedding,
)
from services.core.http.service_app import LoadedModel, ModelRegistry, create_service_app, load_models
from services.core.http.uploads import form_file, read_form
from services.core.runtime.metrics import Metrics
from services.core.runtime.weights import cache_dir
from services.core.tasks.jobs import ConversionJob, WindowEmbeddings, WindowsJob
from services.core.tasks.protocols import SpeakerEncoder, VoiceConverter
from services.store.db import open_database
from services.store.objects import missing_required_store, object_store_settings, open_object_store
from services.vad.segments import cut_speech, join_speech
from services.vc.speech import parse_segments, require_speech
from services.vc.voices import VoiceRecord, VoiceStore

log = logging.getLogger("harmony.vc")

WORK_RATE = 24000          # the rate reference and source audio are decoded at
MIN_REFERENCE_S = 1.0      # a voice needs at least this much speech


def embedding_routes(encoders: ModelRegistry[SpeakerEncoder], metrics: Metrics) -> APIRouter:
    api = APIRouter()

    @api.post("/v1/audio/embeddings")
    async def embeddings(request: Request) -> EmbeddingResult:
        form = await read_form(request)
        params = EmbeddingParams.from_form(form)
        model = encoders.get(params.model)
        speech, audio_seconds = await speech_of_files(form, "file", parse_per_file_segments(params.segments),
                                                      max_seconds=model.spec.limits.audio_seconds(Task.embed))
        seconds = require_speech(speech, WORK_RATE, max(params.min_speech_seconds, 0.1))
        speech = await asyncio.to_thread(resample, speech, WORK_RATE, model.backend.sample_rate)
        embedding = await model.batcher.submit(speech)
        metrics.count_request(model.spec.name, "ok")
        metrics.audio_seconds.labels(model.spec.name).inc(audio_seconds)
        return EmbeddingResult(model=model.spec.name, speech_seconds=round(seconds, 3),
                               data=[EmbeddingData(embedding=[float(x) for x in embedding])])

    @api.post("/v1/audio/embeddings/windows")
    async def embedding_windows(request: Request) -> EmbeddingWindowsResult:
        form = await read_form(request)
        params = EmbeddingWindowsParams.from_form(form)
        model = encoders.get(params.model)
        if model.capabilities.windows is None:
            raise InvalidRequest(f"speaker encoder '{model.spec.name}' does not embed windows", param="model",
                                 code="unsupported_model")
        data, _ = await form_file(form)
        rate, limit = model.backend.sample_rate, model.spec.limits.audio_seconds(Task.embed)
        audio = await asyncio.to_thread(decode_audio, data, rate, max_seconds=min(
            limit, params.max_audio_seconds or limit))
        duration = len(audio) / rate
        spans = parse_segments(params.segments) or [(0.0, duration)]
        windows = await asyncio.gather(*(_windows_of(model, audio, rate, start, end, params.step_s)
                                         for start, end in spans if end > start and start < duration))
        metrics.count_request(model.spec.name, "ok")
        metrics.audio_seconds.labels(model.spec.name).inc(duration)
        return EmbeddingWindowsResult(model=model.spec.name, duration=round(duration, 3),
                                      window_seconds=model.capabilities.windows.window_seconds,
                                      data=[w for found in windows for w in found])

    return api


async def _windows_of(model: LoadedModel[SpeakerEncoder], audio: np.ndarray, rate: int, start: float, end: float,
                      step_s: float) -> list[EmbeddingWindow]:
    """The windows of one speech segment, in the file's seconds (a window's end clamped to the segment's)."""
    piece = audio[int(start * rate):int(end * rate)]
    if len(piece) < rate // 10:  # under 0.1 s: nothing a speaker encoder can tell
        return []
    found = await model.batcher.submit(WindowsJob(audio=piece, step_s=step_s))
    assert isinstance(found, WindowEmbeddings)
    return [EmbeddingWindow(start=round(start + float(s), 3), end=round(min(start + float(e), end), 3),
                            embedding=[round(float(x), 6) for x in vector])
            for s, e, vector in zip(found.starts, found.ends, found.embeddings)]


def conversion_routes(converters: ModelRegistry[VoiceConverter], metrics: Metrics, store: VoiceStore | None
                      ) -> APIRouter:
    api = APIRouter()

    @api.post("/v1/audio/conversions")
    async def conversions(request: Request) -> Response:
        form = await read_form(request)
        params = ConversionParams.from_form(form)
        model = converters.get(params.model)
        data, _ = await form_file(form)
        target = await _target(form, params, model, store)
        rate = params.sample_rate
        source = await asyncio.to_thread(decode_audio, data, rate, max_seconds=model.spec.limits.audio_seconds(Task.vc))
        converted = await model.batcher.submit(
            ConversionJob(audio=source, sample_rate=rate, target=target))
        encoded = await asyncio.to_thread(encode_audio, converted, rate, params.response_format)
        metrics.count_request(model.spec.name, "ok")
        metrics.audio_seconds.labels(model.spec.name).inc(len(source) / rate)
        return Response(encoded, media_type=CONTENT_TYPES[params.response_format],
                        headers={"X-Sample-Rate": str(rate)})

    return api


def store_routes(converters: ModelRegistry[VoiceConverter], store: VoiceStore,
                 encoders: ModelRegistry[SpeakerEncoder] | None = None) -> APIRouter:
    api = APIRouter()

    @api.post("/v1/voices")
    async def register(request: Request) -> RegisteredVoice:
        form = await read_form(request)
        params = VoiceRegistration.from_form(form)
        model = converters.get(params.model)
        embedding = checked_embedding(params, encoders)
        speech, _ = await speech_of_files(form, "reference", max_seconds=model.spec.limits.audio_seconds(Task.vc))
        seconds = require_speech(speech, WORK_RATE, MIN_REFERENCE_S, param="reference")
        stats = await asyncio.to_thread(model.backend.analyze, speech, WORK_RATE)
        record = VoiceRecord(id=store.new_id(), name=params.name, created_at=int(time.time()), embedding=embedding,
                             embedding_model=params.embedding_model, stats=stats, converter=model.spec.name,
                             speech_seconds=round(seconds, 3), reference_files=params.reference_files,
                             reference_sample_rate=WORK_RATE, owner_key_id=params.owner_key_id or None)
        flac = await asyncio.to_thread(encode_audio, speech, WORK_RATE, "flac")
        await asyncio.to_thread(store.add, record, flac)
        return record.public()

    @api.get("/v1/voices")
    async def list_voices() -> RegisteredVoiceList:
        return RegisteredVoiceList(data=[r.public() for r in await asyncio.to_thread(store.list)])

    @api.get("/v1/voices/{voice_id}")
    async def get_voice(voice_id: str) -> RegisteredVoice:
        return (await asyncio.to_thread(store.get, voice_id)).public()

    @api.delete("/v1/voices/{voice_id}")
    async def delete_voice(voice_id: str) -> VoiceDeleted:
        await asyncio.to_thread(store.delete, voice_id)
        return VoiceDeleted(id=voice_id)

    return api


def checked_embedding(params: VoiceRegistration, encoders: ModelRegistry[SpeakerEncoder] | None) -> list[float]:
    """The registration's embedding: finite numbers, as many as its encoder makes when that encoder is served here
    (an encoder's optional ``embedding_size``); a wrong one would make every later use of the voice fail."""
    embedding = parse_embedding(params.embedding)
    encoder = encoders.models.get(params.embedding_model) if encoders and params.embedding_model else None
    size = encoder.capabilities.embedding_size if encoder else None
    if size is not None and len(embedding) != size:
        raise InvalidRequest(f"'embedding' has {len(embedding)} values; '{params.embedding_model}' makes "
                             f"embeddings of {size}", param="embedding")
    return embedding


def parse_per_file_segments(raw: str | None) -> list[Any] | None:
    """``segments``: one JSON list of ``{"start", "end"}`` per file (a single list for a single file)."""
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        raise InvalidRequest("'segments' must be JSON", param="segments") from None
    if data == [] or (isinstance(data, list) and isinstance(data[0], dict)):
        data = [data]  # one file's segments (none: a file without speech)
    if not isinstance(data, list):
        raise InvalidRequest("'segments' must hold one list of segments per file", param="segments")
    return [parse_segments(json.dumps(d)) for d in data]


async def speech_of_files(form: FormData, key: str, segments: list[Any] | None = None, *,
                          max_seconds: float | None = None) -> tuple[np.ndarray, float]:
    """Every file uploaded as ``key`` at the working rate, cut to its ``segments`` (one list per file), joined;
    all the files together decode to at most ``max_seconds`` (AudioTooLong past it)."""
    files = [f for f in form.getlist(key) if isinstance(f, UploadFile)]
    if not files:
        raise InvalidRequest(f"'{key}' is required: upload the audio as a file field", param=key,
                             code="missing_required_parameter")
    if segments is not None and len(segments) != len(files):
        raise InvalidRequest("'segments' must hold one list of segments per file", param="segments")
    pieces, total = [], 0.0
    for upload, cut in zip(files, segments or [None] * len(files)):
        left = None if max_seconds is None else max(max_seconds - total, 1.0 / WORK_RATE)
        audio = await asyncio.to_thread(decode_audio, await upload.read(), WORK_RATE, max_seconds=left, param=key)
        total += len(audio) / WORK_RATE
        pieces.append(cut_speech(audio, WORK_RATE, cut))
    return join_speech(pieces, WORK_RATE), total


async def _target(form: FormData, params: ConversionParams, model: LoadedModel[VoiceConverter],
                  store: VoiceStore | None) -> Any:
    """The target speaker's statistics: a registered voice, or the speech of the ``reference`` files."""
    if params.voice:
        if store is None:
            raise InvalidRequest("this service keeps no voices", param="voice")
        record = await asyncio.to_thread(store.get, params.voice)
        if record.converter != model.spec.name:
            raise InvalidRequest(f"voice '{params.voice}' was analysed for converter '{record.converter}'",
                                 param="voice", code="voice_model_mismatch")
        return record.stats
    if form.get("reference") is None:
        raise InvalidRequest("give the target as 'voice' (a registered voice id) or 'reference' (audio)",
                             param="voice", code="missing_required_parameter")
    speech, _ = await speech_of_files(form, "reference", max_seconds=model.spec.limits.audio_seconds(Task.vc))
    require_speech(speech, WORK_RATE, MIN_REFERENCE_S, param="reference")
    return await asyncio.to_thread(model.backend.analyze, speech, WORK_RATE)


def open_voice_store(spec: NamedModel, config: HarmonyConfig | None = None) -> VoiceStore:
    """The engine's database (``database.url``, $HARMONY_DATABASE_URL, else SQLite in the data directory)
    and object store; voices of the old directory layout (``options.voice_store``) are imported once."""
    config = config or HarmonyConfig()
    settings = object_store_settings(config.object_store, spec.options)
    missing = missing_required_store(settings, "registered voices")
    if missing:
        raise ConfigError(missing)
    objects = open_object_store(settings, config.data_dir)
    store = VoiceStore(open_database(config), objects)
    store.import_directory(str(spec.options.get("voice_store", cache_dir() / "voices")))
    store.sweep_orphans()
    log.info("registered voices: records in %s, speech in %s", store.db, objects.url)
    return store


def create_vc_app(models: list[NamedModel], max_upload_bytes: int = 25 * 1024 * 1024,
                  config: HarmonyConfig | None = None) -> FastAPI:
    metrics = Metrics("vc")
    encoders: ModelRegistry[SpeakerEncoder] = load_models(Task.embed, models, metrics)
    converters: ModelRegistry[VoiceConverter] = load_models(Task.vc, models, metrics)
    first = next((spec for spec in models if spec.task == Task.vc), None)
    store = open_voice_store(first, config) if first else None
    routes = [embedding_routes(encoders, metrics), conversion_routes(converters, metrics, store)]
    if store is not None:
        routes.append(store_routes(converters, store, encoders))
    return create_service_app("vc", [encoders, converters], metrics, routes, max_upload_bytes)
