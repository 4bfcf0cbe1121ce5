"""The SpeechRoute runner: a pipeline of model steps (vad, embed, tts, vc) declared in config, not code.

Each step calls the service of the model the route names for it. A step whose output
the request already carries is skipped (a registered voice has its embedding and
speaker statistics, so VAD and embedding are skipped). A failed step fails the
request with a message naming the step.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from services.core.errors import HarmonyError, InvalidRequest, ServiceUnavailable
from services.core.specs import NamedRoute, RouteStep, Task
from services.router.clients import ServiceClients
from services.router.routing import ModelTable, ServedModel
from services.router.voices import VoiceDirectory

REFERENCE_MIN_SPEECH_S = 1.0


@dataclass
class PipelineState:
    """What flows between the steps. Each step reads what it needs and adds its output."""

    references: list[tuple[str, bytes]] = field(default_factory=list)   # (filename, audio) of the target
    segments: list[list[dict]] | None = None                            # vad: speech per reference file
    embedding: list[float] | None = None                                # embed: the target's embedding
    embedding_model: str | None = None
    speech_flac: bytes | None = None                                    # embed: the cleaned reference speech
    speech_seconds: float = 0.0
    voice_id: str | None = None                                         # a registered voice (profile known)
    text: str = ""
    language: str | None = None
    speed: float = 1.0
    source_audio: bytes | None = None                                   # tts: speech to convert (wav)
    source_rate: int | None = None
    tts_voice: str | None = None
    response_format: str = "mp3"
    sample_rate: int | None = None
    output: bytes | None = None                                         # vc: the converted audio
    steps_run: list[str] = field(default_factory=list)
    steps_skipped: list[str] = field(default_factory=list)


StepFn = Callable[[PipelineState, ServedModel], Awaitable[None]]


class PipelineRunner:
    def __init__(self, table: ModelTable, clients: ServiceClients, voices: VoiceDirectory) -> None:
        self.table = table
        self.clients = clients
        self.voices = voices
        self.handlers: dict[Task, StepFn] = {Task.vad: self.vad, Task.embed: self.embed, Task.tts: self.tts,
                                             Task.vc: self.vc}

    # which route
    def clone_route(self, name: str | None = None) -> NamedRoute:
        routes = list(self.table.routes.values())
        if name and name in self.table.routes:
            return self.table.routes[name]
        for route in routes:
            if route.task == Task.tts and any(s.task == Task.vc for s in route.steps):
                return route
        raise InvalidRequest("voice cloning is not configured: no SpeechRoute with a vc step", param="voice",
                             code="cloning_unavailable")

    def step_model(self, route: NamedRoute, task: Task) -> ServedModel | None:
        step = next((s for s in route.steps if s.task == task), None)
        return self.table.models.get(step.model) if step else None

    # running
    async def run(self, route: NamedRoute, state: PipelineState, until: Task | None = None) -> PipelineState:
        for step in route.steps:
            if self._skip(step, state):
                state.steps_skipped.append(step.name)
            else:
                await self._run_step(route, step, state)
                state.steps_run.append(step.name)
            if until is not None and step.task == until:
                break
        return state

    def _skip(self, step: RouteStep, state: PipelineState) -> bool:
        if step.task == Task.vad:
            return state.voice_id is not None or state.segments is not None or not state.references
        if step.task == Task.embed:
            return state.voice_id is not None or state.embedding is not None or not state.references
        if step.task == Task.tts:
            return state.source_audio is not None or not state.text
        if step.task == Task.vc:
            return state.output is not None or state.source_audio is None
        return False

    async def _run_step(self, route: NamedRoute, step: RouteStep, state: PipelineState) -> None:
        model = self.table.models.get(step.model)
        if model is None:
            raise ServiceUnavailable(f"{route.name}: step '{step.name}' names model '{step.model}', which is not "
                                     "served")
        try:
            await self.handlers[step.task](state, model)
        except HarmonyError as exc:
            exc.message = f"{route.name}: step '{step.name}' ({step.model}) failed: {exc.message}"
            exc.args = (exc.message,)
            raise

    # the steps
    async def vad(self, state: PipelineState, model: ServedModel) -> None:
        segments = []
        for filename, data in state.references:
            response = await self.clients.post(model, "/v1/audio/vad", data={"model": model.name},
                                               files={"file": (filename, data, "application/octet-stream")})
            segments.append(response.json()["segments"])
        state.segments = segments

    async def embed(self, state: PipelineState, model: ServedModel) -> None:
        files = [("file", (name, data, "application/octet-stream")) for name, data in state.references]
        fields = {"model": model.name, "return_speech": "true",
                  "min_speech_seconds": str(REFERENCE_MIN_SPEECH_S)}
        if state.segments is not None:
            fields["segments"] = json.dumps(state.segments)
        body = (await self.clients.post(model, "/v1/audio/embeddings", data=fields, files=files)).json()
        state.embedding = body["data"][0]["embedding"]
        state.embedding_model = model.name
        state.speech_flac = base64.b64decode(body["speech"]["data"])
        state.speech_seconds = body["speech_seconds"]

    async def tts(self, state: PipelineState, model: ServedModel) -> None:
        served, voice, language = await self.voices.default_voice(model.name, state.language or "en")
        payload = {"model": served.name, "input": state.text, "voice": voice.backend_voice, "language": language,
                   "speed": state.speed, "response_format": "wav"}
        async with self.clients.stream(served, "/v1/audio/speech", json=payload) as response:
            state.source_audio = await response.aread()
        state.source_rate = voice.sample_rate
        state.tts_voice = voice.id

    async def vc(self, state: PipelineState, model: ServedModel) -> None:
        fields: dict[str, Any] = {"model": model.name, "response_format": state.response_format,
                                  "sample_rate": str(state.sample_rate or state.source_rate or 24000)}
        files = [("file", ("source.wav", state.source_audio, "audio/wav"))]
        if state.voice_id:
            fields["voice"] = state.voice_id
        elif state.speech_flac is not None:
            files.append(("reference", ("reference.flac", state.speech_flac, "audio/flac")))
        else:
            raise InvalidRequest("no target voice: give a registered voice or reference audio", param="voice")
        state.output = (await self.clients.post(model, "/v1/audio/conversions", data=fields, files=files)).content
