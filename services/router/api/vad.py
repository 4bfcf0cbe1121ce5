"""POST /v1/audio/vad: validate, forward to the VAD service, return its speech segments."""

from __future__ import annotations

from fastapi import APIRouter, Request
from services.auth.estimates import covered, upload_seconds
from services.auth.guard import note_usage, reserve_audio
from services.core.contracts.specs import Task
from services.core.http.uploads import form_file, read_form
from services.core.contracts.wire import VadParams, VadResult
from services.router.upstream.clients import ServiceClients
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
        limit = model.spec.limits.audio_seconds(Task.vad)
        held = await reserve_audio(lambda: upload_seconds(data, limit))  # before any work: the key's quota decides
        files = {"file": (filename, data, "application/octet-stream")}

        def call(cap: float | None):
            fields = params.model_copy(update={"model": model.name, "max_audio_seconds": cap}).form()
            return clients.post(model, "/v1/audio/vad", data=fields, files=files)

        response = await covered(call, held, limit, lambda more: reserve_audio(lambda: more))
        result = VadResult.model_validate_json(response.content)
        note_usage(audio_seconds_in=result.duration)
        return result

    return api
