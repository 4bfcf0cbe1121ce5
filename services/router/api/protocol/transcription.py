"""POST /v1/audio/transcriptions and /v1/audio/translations: the multipart request and OpenAI's responses."""

from __future__ import annotations

from typing import Any, Literal

from openai.types.audio import Transcription, TranscriptionTextDeltaEvent, TranscriptionTextDoneEvent
from openai.types.audio import TranscriptionVerbose as OpenAITranscriptionVerbose
from pydantic import BaseModel, Field, model_validator

from services.core.contracts.errors import InvalidRequest
from services.core.http.form_body import FormModel, UploadFile
from services.router.api.protocol.docs import EXTENSION, TRANSCRIPTION

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
RESPONSE_FORMATS: tuple[str, ...] = ResponseFormat.__args__  # type: ignore[attr-defined]
Granularity = Literal["word", "segment"]


class TranscriptionForm(FormModel):
    """OpenAI's transcription (and translation) request, plus the extensions ``vad_filter`` and ``fit_context``."""

    file: UploadFile = Field(description=f"The audio file, in any format ffmpeg decodes. See {TRANSCRIPTION}")
    model: str = Field(min_length=1, description=f"A speech-to-text model, alias or dated snapshot. {TRANSCRIPTION}")
    language: str | None = Field(None, max_length=16, description=f"ISO-639-1 language of the audio. {TRANSCRIPTION}")
    prompt: str | None = Field(None, description=f"Text to guide the model's style. {TRANSCRIPTION}")
    response_format: ResponseFormat = Field("json", description=f"The format of the answer. {TRANSCRIPTION}")
    temperature: float = Field(0.0, ge=0.0, le=1.0, description=f"Sampling temperature. {TRANSCRIPTION}")
    timestamp_granularities: list[Granularity] = Field(
        default_factory=list, description=f"word and/or segment timestamps (verbose_json only); also sent as "
        f"timestamp_granularities[]. {TRANSCRIPTION}")
    stream: bool = Field(False, description=f"Answer server-sent transcript.text.delta/done events. {TRANSCRIPTION}")
    vad_filter: bool = Field(False, description=f"{EXTENSION}: skip non-speech with Silero VAD")
    fit_context: bool = Field(False, description=f"{EXTENSION}: encode a short window over its own length "
                              "(faster-whisper)")

    @model_validator(mode="after")
    def _granularities_need_verbose(self) -> TranscriptionForm:
        if self.timestamp_granularities and self.response_format != "verbose_json":
            raise InvalidRequest("timestamp_granularities needs response_format=verbose_json",
                                 param="timestamp_granularities")
        return self


class TranscriptionVerbose(OpenAITranscriptionVerbose):
    """OpenAI's verbose_json answer, plus ``task`` (transcribe or translate), as OpenAI's whisper-1 also sends."""

    task: Literal["transcribe", "translate"]


class TranscriptionError(BaseModel):
    """The ``error`` event of a stream that failed after it began: OpenAI's error object."""

    type: Literal["error"] = "error"
    error: dict[str, Any]


TranscriptionEvent = TranscriptionTextDeltaEvent | TranscriptionTextDoneEvent | TranscriptionError
"""One server-sent event of a streamed transcription."""

RESPONSES: dict[int | str, dict[str, Any]] = {200: {
    "description": "json: Transcription; verbose_json: TranscriptionVerbose; text, srt, vtt: the text; "
                   "stream=true: server-sent TranscriptionEvent frames",
    "content": {"text/plain": {"schema": {"type": "string"}}, "text/vtt": {"schema": {"type": "string"}},
                "text/event-stream": {"schema": {"type": "string"}}}}}

__all__ = ["RESPONSES", "RESPONSE_FORMATS", "Transcription", "TranscriptionError", "TranscriptionEvent",
           "TranscriptionForm", "TranscriptionTextDeltaEvent", "TranscriptionTextDoneEvent", "TranscriptionVerbose"]
