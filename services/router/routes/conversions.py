"""POST /v1/audio/conversions: speech converted toward a target voice (registered voice or reference audio)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from services.core.audio import AUDIO_FORMATS, CONTENT_TYPES
from services.core.errors import InvalidRequest
from services.core.specs import Task
from services.core.uploads import form_file, form_str, read_form
from services.router.pipelines import PipelineRunner, PipelineState
from services.router.routes.embeddings import first_model
from starlette.datastructures import UploadFile


def routes(runner: PipelineRunner) -> APIRouter:
    api = APIRouter(tags=["audio"])

    @api.post("/v1/audio/conversions")
    async def conversions(request: Request) -> Response:
        form = await read_form(request)
        fmt = form_str(form, "response_format", "wav") or "wav"
        if fmt not in AUDIO_FORMATS:
            raise InvalidRequest(f"'response_format' must be one of {', '.join(AUDIO_FORMATS)}",
                                 param="response_format")
        rate = form_str(form, "sample_rate")
        if rate is not None and not (rate.isdigit() and 8000 <= int(rate) <= 48000):
            raise InvalidRequest("'sample_rate' must be an integer from 8000 to 48000", param="sample_rate")
        data, _ = await form_file(form)
        voice = form_str(form, "voice")
        reference = form.get("reference")
        if not voice and not isinstance(reference, UploadFile):
            raise InvalidRequest("give the target as 'voice' (a registered voice id) or 'reference' (audio)",
                                 param="voice", code="missing_required_parameter")
        route = runner.clone_route()
        model_name = form_str(form, "model")
        vc_model = first_model(runner.table, Task.vc, model_name) if model_name else runner.step_model(route, Task.vc)
        state = PipelineState(source_audio=data, response_format=fmt, sample_rate=int(rate) if rate else None,
                              voice_id=voice or None)
        if not voice:
            state.references = [(reference.filename or "reference", await reference.read())]
            await runner.run(route, state, until=Task.embed)
        await runner.vc(state, vc_model)
        return Response(state.output, media_type=CONTENT_TYPES[fmt])

    return api
