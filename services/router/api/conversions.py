"""POST /v1/audio/conversions: speech converted toward a target voice, through the conversion route."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from services.auth.estimates import upload_seconds
from services.auth.guard import check_voice, reserve_audio
from services.core.audio.codec import CONTENT_TYPES
from services.core.contracts.errors import InvalidRequest
from services.core.contracts.specs import Task
from services.core.http.uploads import read_form
from services.core.contracts.wire import ConversionParams
from services.router.pipelines import WORK_RATE, PipelineRunner, PipelineState, steps_headers
from services.router.api.uploads import optional_files, uploaded_files


def routes(runner: PipelineRunner) -> APIRouter:
    api = APIRouter(tags=["audio"])

    @api.post("/v1/audio/conversions")
    async def conversions(request: Request) -> Response:
        form = await read_form(request)
        params = ConversionParams.from_form(form)
        source = (await uploaded_files(form, ("file",), max_files=1))[0]
        references = await optional_files(form, ("reference",))
        if not params.voice and not references:
            raise InvalidRequest("give the target as 'voice' (a registered voice id) or 'reference' (audio)",
                                 param="voice", code="missing_required_parameter")
        if params.voice:
            await check_voice(params.voice)
        route = runner.route(Task.vc, params.model, model=params.model)
        limit = runner.step_model(route, Task.vc).spec.limits.audio_seconds(Task.vc)
        await reserve_audio(lambda: upload_seconds(source[1], limit))  # the converted speech is as long as its source
        state = PipelineState(source=source, voice_id=params.voice, references=references, reference_param="reference",
                              response_format=params.response_format, sample_rate=params.sample_rate)
        await runner.run(route, state)
        return Response(state.output, media_type=CONTENT_TYPES[params.response_format],
                        headers={**steps_headers(route, state), "X-Sample-Rate": str(params.sample_rate or WORK_RATE)})

    return api
