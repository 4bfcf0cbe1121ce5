"""POST /v1/audio/conversions (an extension): speech converted toward a target voice."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from services.core.contracts.errors import InvalidRequest
from services.core.contracts.formats import CONTENT_TYPES, AudioFormat
from services.core.http.form_body import FormModel, UploadFile
from services.router.api.protocol.docs import EXTENSION, audio_content

MAX_REFERENCE_FILES = 16


class ConversionForm(FormModel):
    file: UploadFile = Field(description=f"{EXTENSION}: the speech to convert")
    model: str | None = Field(None, description=f"{EXTENSION}: a conversion route or model (default: the first)")
    voice: str | None = Field(None, description=f"{EXTENSION}: the target, a registered voice_... id")
    reference: list[UploadFile] | None = Field(None, max_length=MAX_REFERENCE_FILES,
                                               description=f"{EXTENSION}: the target, as recordings of it")
    response_format: AudioFormat = Field("wav", description=f"{EXTENSION}: the audio format")
    sample_rate: int = Field(24000, ge=8000, le=48000, description=f"{EXTENSION}: the output sample rate")

    @model_validator(mode="after")
    def _target(self) -> ConversionForm:
        if not self.voice and not self.reference:
            raise InvalidRequest("give the target as 'voice' (a registered voice id) or 'reference' (audio)",
                                 param="voice", code="missing_required_parameter")
        return self


RESPONSES: dict[int | str, dict[str, Any]] = {200: {
    "description": "The converted speech in response_format",
    "content": audio_content(sorted(set(CONTENT_TYPES.values())))}}
