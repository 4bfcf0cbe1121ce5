"""Registered voices: POST /v1/audio/voices (register), GET and DELETE /v1/audio/voices/{id}."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request

from services.auth.guard import check_voice, claim_voice, current, forget_voice
from services.core.contracts.errors import NotFound
from services.core.contracts.specs import Task
from services.core.contracts.wire import RegisteredVoice, VoiceRegistration
from services.core.http.form_body import form_request_body
from services.router.access import allow_route
from services.router.api.protocol.voices import (
    MAX_REFERENCE_FILES,
    RegisteredVoiceObject,
    VoiceDeleted,
    VoiceRegisterForm,
)
from services.router.pipelines import PipelineRunner, PipelineState, target_speech
from services.router.routing import ServedModel
from services.router.upstream.clients import ServiceClients


def store_model(runner: PipelineRunner) -> tuple[str, ServedModel]:
    """(clone route, its vc model): the vc model's service keeps the voice store; the request's key must be
    allowed the clone route (403 otherwise)."""
    route = runner.route(Task.tts)
    allow_route(runner.table, route, Task.tts, None)
    return route.name, runner.step_model(route, Task.vc)


def routes(runner: PipelineRunner, clients: ServiceClients) -> APIRouter:
    api = APIRouter(tags=["voices"])

    @api.post("/v1/audio/voices", openapi_extra=form_request_body(VoiceRegisterForm))
    async def register(request: Request) -> RegisteredVoiceObject:
        form = await VoiceRegisterForm.read(request, max_files=MAX_REFERENCE_FILES)
        references = [(f.filename or f"file-{i}", await f.read()) for i, f in enumerate(form.file)]
        route_name, vc_model = store_model(runner)
        state = PipelineState(references=references)
        await runner.run(runner.route(Task.tts), state, until=Task.embed)
        record = current()
        fields = VoiceRegistration(model=vc_model.name, name=form.name, embedding=json.dumps(state.embedding),
                                   embedding_model=state.embedding_model or "", reference_files=len(references),
                                   owner_key_id=record.key.id if record and record.key else None)
        files = [("reference", (f, data, "audio/flac")) for f, data in target_speech(state)]
        # not replayable: a registration cut short may have stored the voice, and a second would store another
        response = await clients.post(vc_model, "/v1/voices", data=fields.form(), files=files, replayable=False)
        voice = RegisteredVoice.model_validate_json(response.content)
        await claim_voice(voice.id)  # the voice belongs to the key that registered it
        return RegisteredVoiceObject(**voice.model_dump(), model=route_name)

    @api.get("/v1/audio/voices/{voice_id}")
    async def get_voice(voice_id: str) -> RegisteredVoiceObject:
        _check_id(voice_id)
        await check_voice(voice_id)
        route_name, vc_model = store_model(runner)
        response = await clients.get(vc_model, f"/v1/voices/{voice_id}")
        return RegisteredVoiceObject(**RegisteredVoice.model_validate_json(response.content).model_dump(),
                                     model=route_name)

    @api.delete("/v1/audio/voices/{voice_id}")
    async def delete_voice(voice_id: str) -> VoiceDeleted:
        _check_id(voice_id)
        await check_voice(voice_id)
        response = await clients.delete(store_model(runner)[1], f"/v1/voices/{voice_id}")
        await forget_voice(voice_id)
        return VoiceDeleted.model_validate_json(response.content)

    return api


def _check_id(voice_id: str) -> None:
    if not voice_id.startswith("voice_"):
        raise NotFound(f"no registered voice '{voice_id}' (built-in voices are listed by GET /v1/audio/voices)",
                       param="voice", code="voice_not_found")
