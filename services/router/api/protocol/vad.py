"""POST /v1/audio/vad (an extension): speech segments of a recording; the answer is the VAD service's own."""

from __future__ import annotations

from pydantic import Field

from services.core.contracts.wire import VadOptions, VadParams, VadResult
from services.core.http.form_body import FormModel, UploadFile
from services.router.api.protocol.docs import EXTENSION


class VadForm(FormModel, VadOptions):
    """The file, and Silero's options as the VAD service takes them (``VadOptions``: one set of bounds)."""

    file: UploadFile = Field(description=f"{EXTENSION}: the audio")
    model: str | None = Field(None, description=f"{EXTENSION}: a VAD model (default: the first)")

    def params(self, model: str, max_audio_seconds: float | None) -> VadParams:
        """The VAD service's request: these options, a concrete model and the quota hold's cap."""
        return VadParams.model_validate({**self.model_dump(exclude={"file"}), "model": model,
                                         "max_audio_seconds": max_audio_seconds})


__all__ = ["VadForm", "VadResult"]
