"""POST /v1/audio/embeddings: a speaker embedding of the speech in a recording, through the embedding route."""

from __future__ import annotations

from fastapi import APIRouter, Request

from services.core.contracts.specs import Task
from services.core.http.form_body import form_request_body
from services.router.access import allow_route
from services.router.api.protocol.embeddings import EmbeddingForm, SpeakerEmbeddingResponse
from services.router.pipelines import PipelineRunner, PipelineState


def routes(runner: PipelineRunner) -> APIRouter:
    api = APIRouter(tags=["audio"])

    @api.post("/v1/audio/embeddings", openapi_extra=form_request_body(EmbeddingForm))
    async def embeddings(request: Request) -> SpeakerEmbeddingResponse:
        """The default route of task embed (VAD, then the speaker encoder), or the route or model named."""
        form = await EmbeddingForm.read(request)
        route = runner.route(Task.embed, form.model, model=form.model)
        allow_route(runner.table, route, Task.embed, form.model)
        state = PipelineState(references=[(form.file.filename or "file-0", await form.file.read())])
        await runner.run(route, state)
        return SpeakerEmbeddingResponse.model_validate({
            "object": "list", "model": runner.step_model(route, Task.embed).name,
            "data": [{"object": "embedding", "index": 0, "embedding": state.embedding}],
            "usage": {"speech_seconds": state.speech_seconds}})

    return api
