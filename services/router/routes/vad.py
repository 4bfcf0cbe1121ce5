"""POST /v1/audio/vad: validate, forward to the VAD service, return its speech segments."""

from __future__ import annotations

from fastapi import APIRouter, Request
from services.auth.guard import note_usage
from services.core.specs import Task
from services.core.uploads import form_file, read_form
from services.core.wire import VadParams, VadResult
from services.router.clients import ServiceClients
from services.router.routing import ModelTable


def routes(table: ModelTable, clients: ServiceClients) -> APIRouter:
    api = APIRouter(tags=["audio"])

    @api.post("/v1/audio/vad", response_model_exclude_none=True)
    async def vad(request: Request) -> VadResult:
        """Speech segments of an audio file: ``{"segments": [{"start": s, "end": e}, ...]}`` in seconds."""
        form = await read_form(request)
        params = VadParams.from_form(form)
        model = table.resolve(params.model, Task.vad) if params.model else table.first_of(Task.vad)
        data, filename = await form_file(form)
        fields = params.model_copy(update={"model": model.name}).form()
        files = {"file": (filename, data, "application/octet-stream")}
        response = await clients.post(model, "/v1/audio/vad", data=fields, files=files)
        result = VadResult.model_validate_json(response.content)
        note_usage(audio_seconds_in=result.duration)
        return result

    return api
