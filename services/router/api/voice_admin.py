"""Registered voices: POST /v1/audio/voices (register), GET and DELETE /v1/audio/voices/{id}."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from services.auth.guard import check_voice, claim_voice, current, forget_voice
from services.core.contracts.errors import InvalidRequest, NotFound
from services.core.contracts.specs import Task
from services.core.http.uploads import form_str, read_form
from services.core.contracts.wire import RegisteredVoice, VoiceDeleted, VoiceRegistration
from services.router.upstream.clients import ServiceClients
from services.router.pipelines import PipelineRunner, PipelineState, target_speech
from services.router.api.uploads import uploaded_files
from services.router.routing import ServedModel

MAX_REFERENCE_FILES = 8
REFERENCE_KEYS = ("file", "files", "files[]", "reference", "audio_sample")


def store_model(runner: PipelineRunner) -> tuple[str, ServedModel]:
    """(clone route, its vc model): the vc model's service keeps the voice store."""
    route = runner.route(Task.tts)
    return route.name, runner.step_model(route, Task.vc)


def routes(runner: PipelineRunner, clients: ServiceClients) -> APIRouter:
    api = APIRouter(tags=["voices"])

    @api.post("/v1/audio/voices")
    async def register(request: Request) -> dict:
        form = await read_form(request, max_files=MAX_REFERENCE_FILES)
        name = (form_str(form, "name") or "").strip()
        if not name or len(name) > 128:
            raise InvalidRequest("'name' is required (1 to 128 characters)", param="name",
                                 code="missing_required_parameter" if not name else "invalid_value")
        references = await uploaded_files(form, REFERENCE_KEYS, MAX_REFERENCE_FILES)
        route_name, vc_model = store_model(runner)
        state = PipelineState(references=references)
        await runner.run(runner.route(Task.tts), state, until=Task.embed)
        record = current()
        fields = VoiceRegistration(model=vc_model.name, name=name, embedding=json.dumps(state.embedding),
                                   embedding_model=state.embedding_model or "", reference_files=len(references),
                                   owner_key_id=record.key.id if record and record.key else None)
        files = [("reference", (f, data, "audio/flac")) for f, data in target_speech(state)]
        # not replayable: a registration cut short may have stored the voice, and a second would store another
        response = await clients.post(vc_model, "/v1/voices", data=fields.form(), files=files, replayable=False)
        voice = RegisteredVoice.model_validate_json(response.content)
        await claim_voice(voice.id)  # the voice belongs to the key that registered it
        return {**voice.model_dump(), "model": route_name}

    @api.get("/v1/audio/voices/{voice_id}")
    async def get_voice(voice_id: str) -> dict:
        _check_id(voice_id)
        await check_voice(voice_id)
        route_name, vc_model = store_model(runner)
        response = await clients.get(vc_model, f"/v1/voices/{voice_id}")
        return {**RegisteredVoice.model_validate_json(response.content).model_dump(), "model": route_name}

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
