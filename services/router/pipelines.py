"""The SpeechRoute runner: a pipeline of model steps (vad, embed, tts, vc) declared in config, not code.

Each step kind lives in a registry (``STEP_KINDS``) and declares what it needs from the
pipeline state (any one of ``needs``) and what it adds to it (``adds``), each as a reader of
the state's fields by attribute (``lambda s: (s.speech,)``: mypy checks the names). One generic rule
decides whether a step runs: it is skipped when everything it adds is already known (a
registered voice needs no VAD or embedding) or when nothing it needs is there. A failed
step fails the request with a message naming the step.

The reference recording crosses the network once: the vad step sends it to the VAD
service, which answers the speech cut out of it (FLAC); embed and vc get only that.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from services.core.contracts.errors import HarmonyError, InvalidRequest, ServiceUnavailable
from services.core.contracts.formats import AudioFormat
from services.core.contracts.specs import NamedRoute, RouteStep, Task
from services.core.contracts.wire import (
    ConversionParams,
    EmbeddingParams,
    EmbeddingResult,
    SynthesisRequest,
    VadParams,
    VadResult,
)
from services.core.runtime import tracing
from services.router.routing import ModelTable, ServedModel
from services.router.upstream.clients import ServiceClients
from services.router.voices import VoiceDirectory

REFERENCE_MIN_SPEECH_S = 1.0
WORK_RATE = 24000  # the rate the reference speech travels at (the voice service's working rate)

Upload = tuple[str, bytes]  # (filename, encoded audio)


@dataclass
class PipelineState:
    """What flows between the steps. A field is known when it is not None."""

    references: list[Upload] | None = None   # the target speaker's recordings, as uploaded
    reference_param: str = "file"            # the request field they came in: errors about them name it
    speech: list[Upload] | None = None       # vad: the speech of each reference, cut out (FLAC)
    speech_seconds: float | None = None
    voice_id: str | None = None              # a registered voice: its profile is in the voice store
    embedding: list[float] | None = None     # embed: the target's speaker embedding
    embedding_model: str | None = None
    text: str | None = None                  # what to say
    source: Upload | None = None             # tts (or the request): speech to convert
    output: bytes | None = None              # vc: the converted audio
    # request options
    language: str | None = None
    speed: float = 1.0
    response_format: AudioFormat = "mp3"
    sample_rate: int | None = None
    steps_run: list[str] = field(default_factory=list)
    steps_skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StepContext:
    clients: ServiceClients
    voices: VoiceDirectory


StepFn = Callable[[StepContext, PipelineState, ServedModel], Awaitable[None]]
Fields = Callable[[PipelineState], tuple[object, ...]]
"""Some fields of the state, read by attribute; a field is known when it is not None."""


@dataclass(frozen=True)
class StepKind:
    task: Task
    needs: Fields   # the step runs when any of these is known...
    adds: Fields    # ...and not all of these are
    run: StepFn

    def skip(self, state: PipelineState) -> bool:
        return (all(value is not None for value in self.adds(state))
                or not any(value is not None for value in self.needs(state)))


STEP_KINDS: dict[Task, StepKind] = {}


def step_kind(task: Task, needs: Fields, adds: Fields) -> Callable[[StepFn], StepFn]:
    """Register the step kind of ``task`` (one per task)."""
    def register(fn: StepFn) -> StepFn:
        STEP_KINDS[task] = StepKind(task, needs, adds, fn)
        return fn
    return register


def _files(name: str, uploads: list[Upload]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(name, (filename, data, "application/octet-stream")) for filename, data in uploads]


@step_kind(Task.vad, needs=lambda s: (s.references,), adds=lambda s: (s.speech,))
async def vad_step(ctx: StepContext, state: PipelineState, model: ServedModel) -> None:
    params = VadParams(model=model.name, return_speech=True, speech_sample_rate=WORK_RATE).form()
    speech, seconds = [], 0.0
    for filename, data in state.references or []:
        response = await ctx.clients.post(model, "/v1/audio/vad", data=params, files=_files("file", [(filename, data)]))
        result = VadResult.model_validate_json(response.content)
        seconds += result.speech_seconds
        if result.speech is not None and result.segments:
            speech.append((f"{filename}.flac", base64.b64decode(result.speech.data)))
    state.speech, state.speech_seconds = speech, seconds


@step_kind(Task.embed, needs=lambda s: (s.speech, s.references), adds=lambda s: (s.embedding,))
async def embed_step(ctx: StepContext, state: PipelineState, model: ServedModel) -> None:
    params = EmbeddingParams(model=model.name, min_speech_seconds=REFERENCE_MIN_SPEECH_S)
    response = await ctx.clients.post(model, "/v1/audio/embeddings", data=params.form(),
                                      files=_files("file", target_speech(state)))
    result = EmbeddingResult.model_validate_json(response.content)
    state.embedding, state.embedding_model = result.data[0].embedding, model.name
    state.speech_seconds = result.speech_seconds


@step_kind(Task.tts, needs=lambda s: (s.text,), adds=lambda s: (s.source,))
async def tts_step(ctx: StepContext, state: PipelineState, model: ServedModel) -> None:
    served, voice, language = await ctx.voices.default_voice(model.name, state.language or "en")
    request = SynthesisRequest(model=served.name, input=state.text or "", voice=voice.backend_voice,
                               language=language, speed=state.speed, response_format="wav")
    async with ctx.clients.stream(served, "/v1/audio/speech", json=request.model_dump()) as response:
        state.source = ("source.wav", await response.aread())
    state.sample_rate = state.sample_rate or voice.sample_rate


@step_kind(Task.vc, needs=lambda s: (s.source,), adds=lambda s: (s.output,))
async def vc_step(ctx: StepContext, state: PipelineState, model: ServedModel) -> None:
    assert state.source is not None
    params = ConversionParams(model=model.name, voice=state.voice_id, response_format=state.response_format,
                              sample_rate=state.sample_rate or WORK_RATE)
    files = _files("file", [state.source])
    if not state.voice_id:
        files += _files("reference", target_speech(state))
    state.output = (await ctx.clients.post(model, "/v1/audio/conversions", data=params.form(), files=files)).content


def target_speech(state: PipelineState) -> list[Upload]:
    """The target speaker's speech: what VAD cut out, or the recordings themselves on a route without vad."""
    uploads = state.speech if state.speech is not None else state.references
    if not uploads:
        raise InvalidRequest(f"no speech found in the audio ('{state.reference_param}'); at least "
                             f"{REFERENCE_MIN_SPEECH_S:g} s of clear speech is needed", param=state.reference_param,
                             code="bad_reference")
    return uploads


class PipelineRunner:
    def __init__(self, table: ModelTable, clients: ServiceClients, voices: VoiceDirectory) -> None:
        self.table = table
        self.context = StepContext(clients, voices)

    def route(self, task: Task, name: str | None = None, model: str | None = None) -> NamedRoute:
        """The route ``name`` (or the first declared route of ``task``), with ``model`` in its ``task`` step.

        With no route of ``task`` declared, a one-step route on ``model`` (or the first model of the task).
        """
        route = self.table.route_for(task, name)
        if route is None:
            served = self.table.resolve(model, task) if model else self.table.first_of(task)
            return NamedRoute(name=served.name, task=task, steps=[RouteStep(name=task.value, task=task,
                                                                            model=served.name)])
        self.table.check_allowed(route.name)
        if model and model != route.name:
            served = self.table.resolve(model, task)
            steps = [s.model_copy(update={"model": served.name}) if s.task == task else s for s in route.steps]
            route = route.model_copy(update={"steps": steps})
        return route

    def step_model(self, route: NamedRoute, task: Task) -> ServedModel:
        step = next((s for s in route.steps if s.task == task), None)
        model = self.table.models.get(step.model) if step else None
        if model is None:
            raise InvalidRequest(f"route '{route.name}' has no {task.value} step that is served", param="model")
        return model

    async def run(self, route: NamedRoute, state: PipelineState, until: Task | None = None) -> PipelineState:
        for step in route.steps:
            kind = STEP_KINDS[step.task]
            if kind.skip(state):
                state.steps_skipped.append(step.name)
            else:
                await self._run_step(route, step, kind, state)
                state.steps_run.append(step.name)
            if until is not None and step.task == until:
                break
        return state

    async def _run_step(self, route: NamedRoute, step: RouteStep, kind: StepKind, state: PipelineState) -> None:
        model = self.table.models.get(step.model)
        if model is None:
            raise ServiceUnavailable(f"{route.name}: step '{step.name}' names model '{step.model}', which is not "
                                     "served")
        try:
            with tracing.span(f"step {step.name}", step=step.name, model=step.model, route=route.name):
                await kind.run(self.context, state, model)
        except HarmonyError as exc:
            if exc.code == "bad_reference":  # the services name their own fields; the client sent this one
                exc.message = exc.message.replace(f"('{exc.param}')", f"('{state.reference_param}')")
                exc.param = state.reference_param
            exc.message = f"{route.name}: step '{step.name}' ({step.model}) failed: {exc.message}"
            exc.args = (exc.message,)
            raise


def steps_headers(route: NamedRoute, state: PipelineState) -> dict[str, str]:
    return {"X-Harmony-Pipeline": route.name, "X-Harmony-Steps-Run": ",".join(state.steps_run),
            "X-Harmony-Steps-Skipped": ",".join(state.steps_skipped)}

