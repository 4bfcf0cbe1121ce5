"""POST /v1/audio/vad: validate, forward to the VAD service, return its speech segments."""

from __future__ import annotations

from fastapi import APIRouter, Request

from services.auth.estimates import covered, upload_seconds
from services.auth.guard import note_usage, reserve_audio
from services.core.contracts.specs import Task
from services.core.http.form_body import form_request_body
from services.router.access import allow_model
from services.router.api.protocol.vad import VadForm, VadResult
from services.router.routing import ModelTable
from services.router.upstream.clients import ServiceClients


def routes(table: ModelTable, clients: ServiceClients) -> APIRouter:
    api = APIRouter(tags=["audio"])

    @api.post("/v1/audio/vad", response_model_exclude_none=True, openapi_extra=form_request_body(VadForm))
    async def vad(request: Request) -> VadResult:
        """Speech segments of an audio file: ``{"segments": [{"start": s, "end": e}, ...]}`` in seconds."""
        form = await VadForm.read(request)
        model = table.resolve(form.model, Task.vad) if form.model else table.first_of(Task.vad)
        allow_model(table, form.model, model)  # 403 when the request's API key may not use it
        data, filename = await form.file.read(), form.file.filename or "audio"
        limit = model.spec.limits.audio_seconds(Task.vad)
        held = await reserve_audio(lambda: upload_seconds(data, limit))  # before any work: the key's quota decides
        files = {"file": (filename, data, "application/octet-stream")}

        def call(cap: float | None):
            return clients.post(model, "/v1/audio/vad", data=form.params(model.name, cap).form(), files=files)

        response = await covered(call, held, limit, lambda more: reserve_audio(lambda: more))
        result = VadResult.model_validate_json(response.content)
        note_usage(audio_seconds_in=result.duration)
        return result

    return api
