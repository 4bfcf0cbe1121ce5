"""POST /v1/audio/embeddings: a speaker embedding of the speech in a recording, through the embedding route."""

from __future__ import annotations

from fastapi import APIRouter, Request
from services.core.contracts.specs import Task
from services.core.http.uploads import form_str, read_form
from services.router.pipelines import PipelineRunner, PipelineState
from services.router.api.uploads import uploaded_files


def routes(runner: PipelineRunner) -> APIRouter:
    api = APIRouter(tags=["audio"])

    @api.post("/v1/audio/embeddings")
    async def embeddings(request: Request) -> dict:
        """The default route of task embed (VAD, then the speaker encoder), or the route or model named."""
        form = await read_form(request)
        name = form_str(form, "model")
        route = runner.route(Task.embed, name, model=name)
        state = PipelineState(references=await uploaded_files(form, ("file",), max_files=1))
        await runner.run(route, state)
        return {"object": "list", "model": runner.step_model(route, Task.embed).name,
                "data": [{"object": "embedding", "index": 0, "embedding": state.embedding}],
                "usage": {"speech_seconds": state.speech_seconds}}

    return api
