"""POST /v1/audio/conversions: speech converted toward a target voice, through the conversion route."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.auth.estimates import upload_seconds
from services.auth.guard import check_voice, reserve_audio
from services.core.contracts.formats import CONTENT_TYPES
from services.core.contracts.specs import Task
from services.core.http.form_body import form_request_body
from services.router.access import allow_route
from services.router.api.protocol.conversions import RESPONSES, ConversionForm
from services.router.pipelines import WORK_RATE, PipelineRunner, PipelineState, steps_headers


def routes(runner: PipelineRunner) -> APIRouter:
    api = APIRouter(tags=["audio"])

    @api.post("/v1/audio/conversions", responses=RESPONSES, openapi_extra=form_request_body(ConversionForm))
    async def conversions(request: Request) -> Response:
        form = await ConversionForm.read(request)
        source = (form.file.filename or "file-0", await form.file.read())
        references = [(f.filename or f"reference-{i}", await f.read()) for i, f in enumerate(form.reference or [])]
        if form.voice:
            await check_voice(form.voice)
        route = runner.route(Task.vc, form.model, model=form.model)
        allow_route(runner.table, route, Task.vc, form.model)
        limit = runner.step_model(route, Task.vc).spec.limits.audio_seconds(Task.vc)
        await reserve_audio(lambda: upload_seconds(source[1], limit))  # the converted speech is as long as its source
        state = PipelineState(source=source, voice_id=form.voice, references=references or None,
                              reference_param="reference", response_format=form.response_format,
                              sample_rate=form.sample_rate)
        await runner.run(route, state)
        return Response(state.output, media_type=CONTENT_TYPES[form.response_format],
                        headers={**steps_headers(route, state), "X-Sample-Rate": str(form.sample_rate or WORK_RATE)})

    return api
