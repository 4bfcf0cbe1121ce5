"""The diarize route's steps, each a call the router makes to a model service over HTTP (so the route runs across
model services on Kubernetes): ``vad`` (Silero: the speech segments), ``embed`` (the speaker encoder's windows over
them: ``POST /v1/audio/embeddings/windows``) and ``stt`` (Whisper with word timestamps). The steps run in the route's
order; the clustering and the alignment of words to speakers run in the router (``clustering``, ``turns``: pure).
Known speakers' references are embedded by the same route's vad and embed models.

An embed step named ``name`` (``NAMING_STEP``) is a second speaker encoder used for naming only: it embeds the same
windows as the clustering ``embed`` step, each cluster's naming mean is the mean of its own windows' embeddings in
that space, and known speakers' references are embedded by it (docs/diarization.md)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
from pydantic import ValidationError

from services.core.contracts.errors import (
    HarmonyError,
    InvalidRequest,
    ServiceUnavailable,
    UpstreamError,
    error_from_body,
)
from services.core.contracts.specs import NamedRoute, RouteStep, Task
from services.core.contracts.wire import (
    STT_EVENT,
    DoneEvent,
    EmbeddingWindow,
    EmbeddingWindowsParams,
    EmbeddingWindowsResult,
    Segment,
    SegmentEvent,
    TranscriptionParams,
    TranscriptionResult,
    VadParams,
    VadResult,
)
from services.core.runtime import tracing
from services.router.diarization.clustering import (
    DISTANCE_THRESHOLD,
    centroids,
    cluster,
    matched_centroids,
    smooth,
)
from services.router.diarization.turns import (
    SpeakerSegment,
    TimedWord,
    Turn,
    segments,
    speaker_of_words,
    speaker_turns,
)
from services.router.pipelines import PipelineState, StepContext, embed_step, vad_step
from services.router.routing import ModelTable, ServedModel
from services.router.upstream.clients import ServiceClients

WINDOW_STEP_S = 0.5
MAX_UNCHUNKED_S = 30.0  # OpenAI: gpt-4o-transcribe-diarize needs chunking_strategy for inputs over 30 s
NAMING_STEP = "name"  # an embed step of this name embeds for naming only; the other embed step clusters


@dataclass(frozen=True)
class VadSettings:
    """``chunking_strategy``'s server_vad settings as the vad step's: Silero's threshold, the padding kept before
    (and after) speech, the silence that ends a segment."""

    threshold: float = 0.5
    prefix_padding_ms: int = 100
    silence_duration_ms: int = 300


@dataclass
class DiarizationJob:
    filename: str
    audio: bytes
    vad: VadSettings = field(default_factory=VadSettings)
    chunked: bool = False           # chunking_strategy given (OpenAI's rule over 30 s)
    language: str | None = None
    languages: str | None = None    # comma-separated: each turn's language detected among these
    prompt: str | None = None
    temperature: float = 0.0
    min_speakers: int | None = None
    max_speakers: int | None = None
    threshold: float = DISTANCE_THRESHOLD
    cap: float | None = None        # decode at most this (the quota hold)
    on_segments: SegmentSink | None = None  # told each segment once it is final, as Whisper's turns come back


@dataclass
class Diarized:
    duration: float = 0.0
    speech: list[tuple[float, float]] = field(default_factory=list)
    windows: EmbeddingWindowsResult | None = None
    transcript: TranscriptionResult | None = None
    labels: list[int] | None = None  # the windows' speakers (in time order), once clustered
    turns: list[Turn] = field(default_factory=list)  # the speech cut into speakers' turns (what Whisper decodes)
    heard: list[Segment] = field(default_factory=list)  # Whisper's segments so far (streamed from the stt step)
    segments: list[SpeakerSegment] = field(default_factory=list)
    told: int = 0  # how many of the segments the job's on_segments was given
    means: dict[int, np.ndarray] = field(default_factory=dict)
    encoder: str = ""  # the clustering step's model
    naming_windows: EmbeddingWindowsResult | None = None  # the naming step's windows (a second encoder)
    naming_encoder: str = ""  # the naming step's model
    spaces: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)  # each encoder's cluster means
    steps_run: list[str] = field(default_factory=list)


SegmentSink = Callable[[Diarized, list[SpeakerSegment]], Awaitable[None]]


Step = Callable[[ServiceClients, ServedModel, DiarizationJob, Diarized], Awaitable[None]]


def _file(job: DiarizationJob) -> dict[str, tuple[str, bytes, str]]:
    return {"file": (job.filename, job.audio, "application/octet-stream")}


async def _vad(clients: ServiceClients, model: ServedModel, job: DiarizationJob, state: Diarized) -> None:
    params = VadParams(model=model.name, threshold=job.vad.threshold, speech_pad_ms=job.vad.prefix_padding_ms,
                       min_silence_duration_ms=job.vad.silence_duration_ms, max_audio_seconds=job.cap)
    result = VadResult.model_validate_json((await clients.post(model, "/v1/audio/vad", data=params.form(),
                                                               files=_file(job))).content)
    if result.duration > MAX_UNCHUNKED_S and not job.chunked:
        raise InvalidRequest(f"the audio is {result.duration:.1f} s long: chunking_strategy is required for inputs "
                             f"longer than {MAX_UNCHUNKED_S:g} s (send chunking_strategy=auto)",
                             param="chunking_strategy", code="invalid_value")
    state.duration, state.speech = result.duration, [(s.start, s.end) for s in result.segments]


async def _embed_windows(clients: ServiceClients, model: ServedModel, job: DiarizationJob,
                         state: Diarized) -> EmbeddingWindowsResult:
    spans = state.speech if state.duration else None  # no vad step: the whole file
    params = EmbeddingWindowsParams(model=model.name, step_s=WINDOW_STEP_S, max_audio_seconds=job.cap,
                                    segments=json.dumps([{"start": s, "end": e} for s, e in spans])
                                    if spans is not None else None)
    if spans == []:  # VAD heard no speech: no windows
        return EmbeddingWindowsResult(model=model.name, duration=state.duration, window_seconds=0, data=[])
    response = await clients.post(model, "/v1/audio/embeddings/windows", data=params.form(), files=_file(job))
    return EmbeddingWindowsResult.model_validate_json(response.content)


async def _embed(clients: ServiceClients, model: ServedModel, job: DiarizationJob, state: Diarized) -> None:
    state.windows, state.encoder = await _embed_windows(clients, model, job, state), model.name


async def _embed_naming(clients: ServiceClients, model: ServedModel, job: DiarizationJob, state: Diarized) -> None:
    """The naming step: the same windows (same segments, same step) embedded by a second encoder."""
    state.naming_windows, state.naming_encoder = await _embed_windows(clients, model, job, state), model.name


async def _stt(clients: ServiceClients, model: ServedModel, job: DiarizationJob, state: Diarized) -> None:
    """Whisper with word timestamps: over each speaker's turn on its own when the speech and its speakers are
    known (a vad and an embed step ran first), else over the whole file."""
    if state.windows is not None:
        _cluster(state, job)
    if state.windows is not None and state.speech:
        state.turns = speaker_turns(state.speech, [w.start + (w.end - w.start) / 2 for w in _windows(state)],
                                    state.labels or [])
    spans = json.dumps([{"start": t.start, "end": t.end} for t in state.turns]) if state.turns else None
    params = TranscriptionParams(model=model.name, language=job.language, prompt=job.prompt,
                                 temperature=job.temperature, word_timestamps=True, max_audio_seconds=job.cap,
                                 languages=job.languages, spans=spans)
    async with clients.stream(model, "/v1/audio/transcriptions", data={**params.form(), "stream": "true"},
                              files=_file(job)) as response:
        async for line in response.aiter_lines():
            if not line.strip():
                continue
            try:
                event = STT_EVENT.validate_json(line)
            except ValidationError:
                raise UpstreamError(f"model '{model.name}' sent an event that is not its contract") from None
            if isinstance(event, SegmentEvent):
                state.heard.append(event.segment)
                if state.labels is not None:  # the speakers are known: the segments before the last are final
                    await _tell(job, state, _speaker_segments(state, state.heard)[:-1])
            elif isinstance(event, DoneEvent):
                state.transcript = event.result
            else:
                raise error_from_body(event.status, {"error": event.error})
    if state.transcript is None:
        raise UpstreamError(f"model '{model.name}' ended the stream without a result")
    state.duration = state.duration or state.transcript.duration


STEPS: dict[Task, Step] = {Task.vad: _vad, Task.embed: _embed, Task.stt: _stt}
"""The step kinds of a diarize route (a route of task stt), by the task of each step's model."""


async def diarize(table: ModelTable, clients: ServiceClients, route: NamedRoute, job: DiarizationJob) -> Diarized:
    """Run ``route``'s steps, then cluster the windows and give each of Whisper's words its speaker."""
    state = Diarized()
    for step in route.steps:
        run = _embed_naming if _naming(step) else STEPS.get(step.task)
        model = table.models.get(step.model)
        if run is None or model is None:
            raise ServiceUnavailable(f"{route.name}: step '{step.name}' ({step.task.value}, model '{step.model}') "
                                     "cannot run in a diarize route")
        try:
            with tracing.span(f"step {step.name}", step=step.name, model=step.model, route=route.name):
                await run(clients, model, job, state)
        except HarmonyError as exc:
            if exc.param not in ("chunking_strategy", "file"):
                exc.message = f"{route.name}: step '{step.name}' ({step.model}) failed: {exc.message}"
                exc.args = (exc.message,)
            raise
        state.steps_run.append(step.name)
    if state.transcript is None or state.windows is None:
        raise ServiceUnavailable(f"route '{route.name}' needs an embed and an stt step")
    with tracing.span("step cluster", step="cluster", route=route.name):
        await _assign(state, job)
    return state


def _naming(step: RouteStep) -> bool:
    return step.task == Task.embed and step.name == NAMING_STEP


def encoders(route: NamedRoute) -> tuple[str | None, str | None]:
    """The route's clustering encoder and its naming encoder (the models of its embed steps), None where absent."""
    clustering = next((s.model for s in route.steps if s.task == Task.embed and not _naming(s)), None)
    return clustering, next((s.model for s in route.steps if _naming(s)), None)


def _windows(state: Diarized) -> list[EmbeddingWindow]:
    return sorted(state.windows.data if state.windows else [], key=lambda w: w.start)


def _embeddings(state: Diarized) -> np.ndarray:
    windows = _windows(state)
    return np.array([w.embedding for w in windows], dtype=np.float32) if windows else np.zeros((0, 1))


def _cluster(state: Diarized, job: DiarizationJob) -> None:
    if state.labels is None:
        state.labels = smooth(cluster(_embeddings(state), threshold=job.threshold, min_speakers=job.min_speakers,
                                      max_speakers=job.max_speakers)).tolist()
        # no windows (no speech found): nobody to name (A)
        state.means = centroids(_embeddings(state), np.array(state.labels, dtype=int))
        state.spaces = {state.encoder: state.means}
        if state.naming_windows is not None:
            state.spaces[state.naming_encoder] = matched_centroids(
                [(w.start, w.end) for w in _windows(state)], state.labels,
                [(w.start, w.end, np.array(w.embedding, dtype=np.float32)) for w in state.naming_windows.data])


def _speaker_segments(state: Diarized, heard: list[Segment]) -> list[SpeakerSegment]:
    """Whisper's words with their speakers as segments: each word its turn's speaker when Whisper decoded turns,
    else the nearest window's. Prefix-stable: more words change only the last segment or add new ones."""
    labels = state.labels or []
    words: list[TimedWord] = []
    speakers: list[int] = []
    centres = [w.start + (w.end - w.start) / 2 for w in _windows(state)]
    for segment in heard:
        said = [TimedWord(w.word, w.start, w.end) for w in segment.words or []]
        words += said
        if segment.span is not None and segment.span < len(state.turns):
            speakers += [state.turns[segment.span].speaker] * len(said)
        else:
            speakers += speaker_of_words(said, centres, labels)
    return segments(words, speakers)


async def _tell(job: DiarizationJob, state: Diarized, final: list[SpeakerSegment]) -> None:
    if job.on_segments is not None and len(final) > state.told:
        new, state.told = final[state.told:], len(final)
        await job.on_segments(state, new)


async def _assign(state: Diarized, job: DiarizationJob) -> None:
    _cluster(state, job)
    assert state.transcript is not None
    state.segments = _speaker_segments(state, state.transcript.segments)
    await _tell(job, state, state.segments)


async def embed_reference(ctx: StepContext, route: NamedRoute, table: ModelTable, index: int,
                          data: bytes) -> tuple[list[float], str]:
    """A known speaker's reference (2-10 s of audio) embedded by the route's vad model and its naming encoder (the
    clustering one when the route has no naming step), and that encoder's name; a reference without enough speech
    is a 400 on ``known_speaker_references``."""
    state = PipelineState(references=[(f"reference-{index}", data)], reference_param="known_speaker_references")
    clustering, naming = encoders(route)
    try:
        for step in route.steps:
            model = table.models.get(step.model)
            if model is not None and step.task == Task.vad:
                await vad_step(ctx, state, model)
            elif model is not None and step.task == Task.embed and step.model == (naming or clustering):
                await embed_step(ctx, state, model)
    except HarmonyError as exc:
        if isinstance(exc, InvalidRequest):
            exc.message = f"known_speaker_references[{index}]: {exc.message}"
            exc.param, exc.args = "known_speaker_references", (exc.message,)
        raise
    if state.embedding is None or state.embedding_model is None:
        raise ServiceUnavailable(f"route '{route.name}' has no embed step to embed known speakers with")
    return state.embedding, state.embedding_model
