"""Diarized transcription: ``POST /v1/audio/transcriptions`` with the diarize route (``gpt-4o-transcribe-diarize``).

The route's steps run through ``services.router.diarization`` (VAD, the speaker encoder's windows, Whisper's words);
speakers are named from ``known_speaker_names[]`` + ``known_speaker_references[]`` (data URLs of 2-10 s of audio, or
the id of a voice the key registered) and, with ``known_speakers=registered``, every voice the key owns. Answers:
``diarized_json`` (``TranscriptionDiarized``), ``json``, ``text``, and beyond OpenAI ``srt`` and ``vtt`` (one cue per
segment, the speaker's name as ``A: text`` and a WebVTT voice span ``<v A>text</v>``); ``stream=true`` sends one
``transcript.text.segment`` event per segment, then ``transcript.text.done``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from services.auth.estimates import covered, upload_seconds
from services.auth.guard import check_voice, note_usage, reserve_audio, visible_voices
from services.core.audio import decode_audio
from services.core.contracts.errors import HarmonyError, InvalidRequest, UpstreamError
from services.core.contracts.specs import NamedRoute, Task
from services.core.contracts.wire import RegisteredVoice, RegisteredVoiceList
from services.core.http.sse import MEDIA_TYPE, sse_frame
from services.core.http.unsupported import refuse_unsupported
from services.router.access import allow_route
from services.router.api.protocol.diarization import (
    DIARIZED_FORMATS,
    MAX_KNOWN_SPEAKERS,
    REFERENCE_SECONDS,
    TranscriptionDiarized,
    TranscriptionDiarizedSegment,
    TranscriptionTextSegmentEvent,
)
from services.router.api.protocol.transcription import (
    Transcription,
    TranscriptionError,
    TranscriptionForm,
    TranscriptionTextDoneEvent,
    server_vad_fields,
)
from services.router.api.transcript_formats import Cue, json_response, subtitles
from services.router.api.voice_admin import store_model
from services.router.diarization.clustering import (
    NAMING_SIMILARITY_THRESHOLD,
    SPEAKER_SIMILARITY_THRESHOLD,
    Reference,
    name_in_spaces,
)
from services.router.diarization.pipeline import (
    DiarizationJob,
    Diarized,
    VadSettings,
    diarize,
    embed_reference,
    encoders,
)
from services.router.diarization.turns import SpeakerSegment
from services.router.pipelines import PipelineRunner
from services.router.upstream.clients import ServiceClients

REFERENCES = "known_speaker_references"
NOT_HONOURED = ("include", "timestamp_granularities", "vad_filter", "fit_context")
VAD_FIELDS = {"threshold": float, "prefix_padding_ms": int, "silence_duration_ms": int}


async def handle(form: TranscriptionForm, route: NamedRoute, runner: PipelineRunner, clients: ServiceClients,
                 task: str) -> Response:
    allow_route(runner.table, route, Task.stt, None)  # 403 when the key may not use the route
    if task != "transcribe":
        raise InvalidRequest(f"model '{form.model}' does not translate", param="model", code="model_task_mismatch")
    for name in NOT_HONOURED:
        if name in form.model_fields_set:
            refuse_unsupported(name, f"'{name}' is not supported with model '{form.model}'")
    if form.response_format not in DIARIZED_FORMATS:
        raise InvalidRequest(f"response_format '{form.response_format}' is not supported by model '{form.model}': "
                             f"use {', '.join(DIARIZED_FORMATS)}", param="response_format", code="unsupported_value")
    language, languages = form.language_choice(task)
    job = DiarizationJob(filename=form.file.filename or "audio", audio=await form.file.read(),
                         vad=_vad_settings(form.chunking_strategy), chunked=form.chunking_strategy is not None,
                         language=language, languages=languages, prompt=form.whisper_prompt(task),
                         temperature=form.temperature, min_speakers=form.min_speakers, max_speakers=form.max_speakers)
    if job.min_speakers and job.max_speakers and job.min_speakers > job.max_speakers:
        raise InvalidRequest("'min_speakers' is over 'max_speakers'", param="min_speakers")
    references = await _known_speakers(form, route, runner, clients)
    limit = runner.table.models[runner.step_model(route, Task.stt).name].spec.limits.audio_seconds(Task.stt)
    held = await reserve_audio(lambda: upload_seconds(job.audio, limit))

    async def run(cap: float | None) -> Diarized:
        job.cap = cap
        return await diarize(runner.table, clients, route, job)

    naming = Naming(references, form.speaker_similarity_threshold)
    headers = {"X-Harmony-Pipeline": route.name, "X-Harmony-Steps-Run": ",".join(s.name for s in route.steps)}
    if form.stream:
        return await _streamed(job, naming, lambda: covered(run, held, limit, _hold_more), headers)
    result = await covered(run, held, limit, _hold_more)
    note_usage(audio_seconds_in=result.duration)
    answer = _answer(result, naming.names(result))
    headers["X-Harmony-Steps-Run"] = ",".join(result.steps_run)
    if form.response_format == "text":
        return PlainTextResponse(answer.text + "\n", headers=headers)
    if form.response_format in ("srt", "vtt"):
        return subtitles((Cue(s.start, s.end, s.text, s.speaker) for s in answer.segments), form.response_format,
                         headers)
    if form.response_format == "json":
        usage = answer.usage.model_dump() if answer.usage else None
        return _with_headers(json_response(Transcription.model_validate({"text": answer.text, "usage": usage})),
                             headers)
    return _with_headers(json_response(answer), headers)


async def _hold_more(seconds: float) -> None:
    await reserve_audio(lambda: seconds)


@dataclass
class Naming:
    """The clusters' names, from the known speakers (set once the clusters are known), each reference compared in
    its encoder's space at that encoder's threshold (the request's ``speaker_similarity_threshold`` for all)."""

    references: list[Reference]
    threshold: float | None
    found: dict[int, str] | None = None

    def names(self, state: Diarized) -> dict[int, str]:
        if self.found is None:
            thresholds = {state.encoder: SPEAKER_SIMILARITY_THRESHOLD}
            if state.naming_encoder:
                thresholds[state.naming_encoder] = NAMING_SIMILARITY_THRESHOLD
            if self.threshold is not None:
                thresholds = dict.fromkeys(thresholds, self.threshold)
            self.found = name_in_spaces(state.spaces, self.references, thresholds)
        return self.found


def _with_headers(response: Response, headers: dict[str, str]) -> Response:
    response.headers.update(headers)
    return response


def _segment(index: int, segment: SpeakerSegment, names: dict[int, str]) -> TranscriptionDiarizedSegment:
    return TranscriptionDiarizedSegment(id=f"seg_{index}", type="transcript.text.segment",
                                        start=round(segment.start, 3), end=round(segment.end, 3),
                                        speaker=names.get(segment.speaker, "A"), text=segment.text)


def _answer(result: Diarized, names: dict[int, str]) -> TranscriptionDiarized:
    segments = [_segment(i, s, names) for i, s in enumerate(result.segments)]
    return TranscriptionDiarized.model_validate({
        "task": "transcribe", "duration": round(result.duration, 3), "segments": [s.model_dump() for s in segments],
        "text": " ".join(s.text for s in segments), "usage": {"type": "duration", "seconds": result.duration}})


Told = list[TranscriptionDiarizedSegment] | Diarized | BaseException


async def _streamed(job: DiarizationJob, naming: Naming, run: Callable[[], Awaitable[Diarized]],
                    headers: dict[str, str]) -> Response:
    """Segments as server-sent events as soon as each is final (Whisper decodes the speakers' turns one after
    another), then ``transcript.text.done``. A failure before the first segment is answered with its status; after,
    it is an ``error`` event."""
    told: asyncio.Queue[Told] = asyncio.Queue()
    sent = 0

    async def tell(state: Diarized, new: list[SpeakerSegment]) -> None:
        nonlocal sent
        names = naming.names(state)
        told.put_nowait([_segment(sent + i, s, names) for i, s in enumerate(new)])
        sent += len(new)

    async def work() -> None:
        try:
            told.put_nowait(await run())
        except Exception as exc:
            told.put_nowait(exc)

    job.on_segments = tell
    task = asyncio.create_task(work())
    try:
        first = await told.get()
        if isinstance(first, BaseException):
            raise first
    except BaseException:
        task.cancel()
        raise
    return StreamingResponse(_events(first, told, task), media_type=MEDIA_TYPE,
                             headers={**headers, "Cache-Control": "no-cache"})


async def _events(first: Told, told: asyncio.Queue[Told], task: asyncio.Task[None]) -> AsyncIterator[bytes]:
    texts: list[str] = []
    item = first
    try:
        while isinstance(item, list):
            for segment in item:
                texts.append(segment.text)
                yield sse_frame(TranscriptionTextSegmentEvent.model_validate(segment.model_dump()))
            item = await told.get()
        if isinstance(item, HarmonyError):
            yield sse_frame(TranscriptionError(**item.to_body()))
        elif isinstance(item, BaseException):
            yield sse_frame(TranscriptionError(**UpstreamError(f"the diarization failed: {item}").to_body()))
        else:
            note_usage(audio_seconds_in=item.duration)
            yield sse_frame(TranscriptionTextDoneEvent(type="transcript.text.done", text=" ".join(texts)))
    finally:
        task.cancel()


def _vad_settings(raw: str | None) -> VadSettings:
    """``chunking_strategy``: ``auto`` (the route's VAD defaults) or ``{"type": "server_vad", ...}`` whose
    threshold, prefix_padding_ms and silence_duration_ms become the vad step's; anything else a 400 naming it."""
    if raw is None:
        return VadSettings()
    settings: dict[str, Any] = {}
    for key, number in server_vad_fields(raw).items():
        if key not in VAD_FIELDS:
            raise InvalidRequest(f"unknown field chunking_strategy.{key}", param="chunking_strategy")
        try:
            settings[key] = VAD_FIELDS[key](number)
        except (TypeError, ValueError):
            raise InvalidRequest(f"chunking_strategy.{key} must be a number", param="chunking_strategy") from None
    vad = VadSettings(**settings)
    if not (0.0 <= vad.threshold <= 1.0 and 0 <= vad.prefix_padding_ms <= 10_000
            and 0 <= vad.silence_duration_ms <= 10_000):
        raise InvalidRequest("chunking_strategy: threshold must be 0-1, prefix_padding_ms and silence_duration_ms "
                             "0-10000", param="chunking_strategy")
    return vad


async def _known_speakers(form: TranscriptionForm, route: NamedRoute, runner: PipelineRunner,
                          clients: ServiceClients) -> list[Reference]:
    """Each known speaker (name, embedding, its encoder): the references sent (embedded by the route's naming
    encoder, else its clustering one), then the key's voices when asked. A registered voice keeps the embedding its
    encoder made (its ``embedding_model``), compared in that space: a voice id whose encoder is none of the route's
    embed steps' is a 400 naming known_speaker_references; with ``known_speakers=registered`` such voices are left
    out."""
    names, refs = form.known_speaker_names, form.known_speaker_references
    if len(names) != len(refs):
        raise InvalidRequest(f"known_speaker_names[] has {len(names)} entries and known_speaker_references[] "
                             f"{len(refs)}: give one reference per name", param=REFERENCES)
    if len(refs) > MAX_KNOWN_SPEAKERS:
        raise InvalidRequest(f"at most {MAX_KNOWN_SPEAKERS} known speakers", param=REFERENCES)
    spaces = {model for model in encoders(route) if model}
    found = []
    for index, (name, ref) in enumerate(zip(names, refs)):
        if ref.startswith("voice_"):
            await check_voice(ref)  # 404 unless the key registered it
            voice = await _voice(runner, clients, ref)
            if voice.embedding_model not in spaces:
                raise InvalidRequest(f"known_speaker_references[{index}]: voice '{ref}' was embedded by "
                                     f"'{voice.embedding_model}', which model '{form.model}' does not embed with "
                                     f"({', '.join(sorted(spaces))}): embeddings of two encoders do not compare",
                                     param=REFERENCES)
            found.append(Reference(name, np.array(voice.embedding), voice.embedding_model))
            continue
        data = await _reference_audio(index, ref)
        embedding, encoder = await embed_reference(runner.context, route, runner.table, index, data)
        found.append(Reference(name, np.array(embedding), encoder))
    if form.known_speakers == "registered":
        found += [Reference(v.name, np.array(v.embedding), v.embedding_model)
                  for v in await _own_voices(runner, clients) if v.embedding_model in spaces]
    return found


async def _reference_audio(index: int, ref: str) -> bytes:
    """A data URL's audio, 2-10 s long (OpenAI's limits); a 400 naming known_speaker_references otherwise."""
    where = f"known_speaker_references[{index}]"
    head, _, payload = ref.partition(",")
    if not head.startswith("data:") or not head.endswith(";base64") or not payload:
        raise InvalidRequest(f"{where} must be a data URL of audio (data:audio/wav;base64,...) or a registered "
                             "voice id", param=REFERENCES)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{where} is not valid base64", param=REFERENCES) from None
    low, high = REFERENCE_SECONDS
    try:
        audio = await asyncio.to_thread(decode_audio, data, 16000, max_seconds=high + 0.5, param=REFERENCES)
    except HarmonyError as exc:
        exc.message = f"{where}: {exc.message}"
        exc.args = (exc.message,)
        raise
    if not low <= len(audio) / 16000 <= high + 0.5:
        raise InvalidRequest(f"{where} is {len(audio) / 16000:.1f} s long: a reference must be {low:g}-{high:g} s",
                             param=REFERENCES)
    return data


async def _voice(runner: PipelineRunner, clients: ServiceClients, voice_id: str) -> RegisteredVoice:
    _, model = store_model(runner)
    return RegisteredVoice.model_validate_json((await clients.get(model, f"/v1/voices/{voice_id}")).content)


async def _own_voices(runner: PipelineRunner, clients: ServiceClients) -> list[RegisteredVoice]:
    _, model = store_model(runner)
    records = RegisteredVoiceList.model_validate_json((await clients.get(model, "/v1/voices")).content).data
    mine = await visible_voices([r.id for r in records])
    return [r for r in records if r.id in mine]
