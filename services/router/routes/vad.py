"""POST /v1/audio/vad: validate, forward to the VAD service, return its speech segments."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from services.core.disconnect import until_disconnected
from services.core.errors import ModelNotFound
from services.core.specs import Task
from services.core.uploads import form_file, form_str, read_form
from services.router.clients import ServiceClients
from services.router.routing import ModelTable, ServedModel
from services.vad.segments import parse_options


def default_model(table: ModelTable) -> ServedModel:
    for model in table.models.values():
        if model.task == Task.vad:
            return model
    raise ModelNotFound("no voice activity detection model is served", param="model")


def routes(table: ModelTable, clients: ServiceClients) -> APIRouter:
    api = APIRouter(tags=["audio"])

    @api.post("/v1/audio/vad")
    async def vad(request: Request) -> JSONResponse:
        """Speech segments of an audio file: ``{"segments": [{"start": s, "end": e}, ...]}`` in seconds."""
        form = await read_form(request)
        name = form_str(form, "model")
        model = table.resolve(name, Task.vad) if name else default_model(table)
        options = parse_options(lambda field: form_str(form, field))
        data, filename = await form_file(form)
        fields = {"model": model.name, **options.form_fields()}
        files = {"file": (filename, data, "application/octet-stream")}
        response = await until_disconnected(request, clients.post(model, "/v1/audio/vad", data=fields, files=files))
        return JSONResponse(response.json())

    return api
