"""POST /v1/audio/vad (an extension): speech segments of a recording; the answer is the VAD service's own."""

from __future__ import annotations

from pydantic import Field

from services.core.contracts.wire import VadParams, VadResult
from services.core.http.form_body import FormModel, UploadFile
from services.router.api.protocol.docs import EXTENSION

_PARAMS = VadParams.model_fields


class VadForm(FormModel):
    """The file, and Silero's options as the VAD service takes them (``VadParams``: the same bounds)."""

    file: UploadFile = Field(description=f"{EXTENSION}: the audio")
    model: str | None = Field(None, description=f"{EXTENSION}: a VAD model (default: the first)")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="speech probability above which a frame is speech")
    min_speech_duration_ms: float = Field(250, ge=0.0, le=3_600_000.0, description="shorter speech is dropped")
    min_silence_duration_ms: float = Field(100, ge=0.0, le=3_600_000.0, description="shorter silence is kept")
    speech_pad_ms: float = Field(30, ge=0.0, le=60_000.0, description="padding around each segment")
    max_speech_duration_s: float | None = Field(None, gt=0.0, description="longer speech is split")
    return_speech: bool = Field(False, description=_PARAMS["return_speech"].description)
    speech_sample_rate: int = Field(24000, ge=8000, le=48000, description=_PARAMS["speech_sample_rate"].description)

    def params(self, model: str, max_audio_seconds: float | None) -> VadParams:
        """The VAD service's request: these options, a concrete model and the quota hold's cap."""
        return VadParams.model_validate({**self.model_dump(exclude={"file"}), "model": model,
                                         "max_audio_seconds": max_audio_seconds})


__all__ = ["VadForm", "VadResult"]
