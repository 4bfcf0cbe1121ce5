"""POST /v1/audio/embeddings: a speaker embedding of the speech in a recording (VAD first when one is served)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from services.core.specs import Task
from services.core.uploads import form_file, form_str, read_form
from services.router.clients import ServiceClients
from services.router.routing import ModelTable


def first_model(table: ModelTable, task: Task, name: str | None = None):
    if name:
        return table.resolve(name, task)
    for model in table.models.values():
        if model.task == task:
            return model
    return table.resolve(None, task)


def routes(table: ModelTable, clients: ServiceClients) -> APIRouter:
    api = APIRouter(tags=["audio"])

    @api.post("/v1/audio/embeddings")
    async def embeddings(request: Request) -> dict[str, Any]:
        form = await read_form(request)
        model = first_model(table, Task.embed, form_str(form, "model"))
        data, filename = await form_file(form)
        files = {"file": (filename, data, "application/octet-stream")}
        fields = {"model": model.name}
        vad = next((m for m in table.models.values() if m.task == Task.vad), None)
        if vad is not None:  # embed the speech only, as the voice-cloning pipeline does
            found = await clients.post(vad, "/v1/audio/vad", data={"model": vad.name}, files=files)
            fields["segments"] = json.dumps(found.json()["segments"])
        body = (await clients.post(model, "/v1/audio/embeddings", data=fields, files=files)).json()
        return {"object": "list", "data": body["data"], "model": model.name,
                "usage": {"speech_seconds": body["speech_seconds"]}}

    return api
