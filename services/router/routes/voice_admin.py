"""Registered voices: POST /v1/audio/voices (register), GET and DELETE /v1/audio/voices/{id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from services.core.errors import InvalidRequest, NotFound
from services.core.specs import Task
from services.core.uploads import form_str, read_form
from services.router.clients import ServiceClients
from services.router.pipelines import PipelineRunner, PipelineState
from services.router.routing import ServedModel
from services.router.voices import VoiceDirectory
from starlette.datastructures import UploadFile

MAX_REFERENCE_FILES = 8


def store_model(runner: PipelineRunner) -> ServedModel:
    """The vc model of the clone route: its service keeps the voice store."""
    model = runner.step_model(runner.clone_route(), Task.vc)
    if model is None:
        raise InvalidRequest("voice cloning is not configured: the clone route has no vc step", param="voice")
    return model


def routes(runner: PipelineRunner, clients: ServiceClients, voices: VoiceDirectory) -> APIRouter:
    api = APIRouter(tags=["voices"])

    @api.post("/v1/audio/voices")
    async def register(request: Request) -> dict[str, Any]:
        form = await read_form(request, max_files=MAX_REFERENCE_FILES)
        name = (form_str(form, "name") or "").strip()
        if not name or len(name) > 128:
            raise InvalidRequest("'name' is required (1 to 128 characters)", param="name",
                                 code="missing_required_parameter" if not name else "invalid_value")
        uploads = [f for key in ("file", "files", "files[]", "reference", "audio_sample")
                   for f in form.getlist(key) if isinstance(f, UploadFile)]
        if not uploads:
            raise InvalidRequest("upload one or more reference recordings as 'file'", param="file",
                                 code="missing_required_parameter")
        references = [(u.filename or f"reference-{i}", await u.read()) for i, u in enumerate(uploads)]
        route = runner.clone_route()
        state = await runner.run(route, PipelineState(references=references), until=Task.embed)
        vc_model = store_model(runner)
        fields = {"model": vc_model.name, "name": name, "embedding": _json(state.embedding),
                  "embedding_model": state.embedding_model or "", "reference_files": str(len(references))}
        response = await clients.post(vc_model, "/v1/voices", data=fields,
                                      files={"reference": ("reference.flac", state.speech_flac, "audio/flac")})
        return {**response.json(), "model": route.name}

    @api.get("/v1/audio/voices/{voice_id}")
    async def get_voice(voice_id: str) -> dict[str, Any]:
        _check_id(voice_id)
        response = await clients.get(store_model(runner), f"/v1/voices/{voice_id}")
        return {**response.json(), "model": runner.clone_route().name}

    @api.delete("/v1/audio/voices/{voice_id}")
    async def delete_voice(voice_id: str) -> dict[str, Any]:
        _check_id(voice_id)
        response = await clients.delete(store_model(runner), f"/v1/voices/{voice_id}")
        return response.json()

    return api


def _check_id(voice_id: str) -> None:
    if not voice_id.startswith("voice_"):
        raise NotFound(f"no registered voice '{voice_id}' (built-in voices are listed by GET /v1/audio/voices)",
                       param="voice", code="voice_not_found")


def _json(value: Any) -> str:
    import json

    return json.dumps(value)
