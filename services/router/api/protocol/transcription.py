"""POST /v1/audio/transcriptions and /v1/audio/translations: the multipart request and OpenAI's responses."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from openai.types.audio import Transcription, TranscriptionTextDeltaEvent, TranscriptionTextDoneEvent
from openai.types.audio import TranscriptionVerbose as OpenAITranscriptionVerbose
from pydantic import BaseModel, Field, model_validator

from services.core.contracts.errors import InvalidRequest
from services.core.http.form_body import FormModel, FormObject, UploadFile
from services.core.http.unsupported import refuse_unsupported
from services.router.api.protocol.diarization import DIARIZATION_EXTENSIONS, DiarizationFields
from services.router.api.protocol.docs import EXTENSION, TRANSCRIPTION

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt", "diarized_json"]
RESPONSE_FORMATS: tuple[str, ...] = ResponseFormat.__args__  # type: ignore[attr-defined]
Granularity = Literal["word", "segment"]


Include = Literal["logprobs"]
DIARIZE_FIELDS = ("known_speaker_names", "known_speaker_references", *DIARIZATION_EXTENSIONS)  # diarize's only
TRANSCRIBE_ONLY = ("include", "keywords", "languages", "chunking_strategy", *DIARIZE_FIELDS, "language")
"""Fields OpenAI's translations do not define: refused there by name."""


class TranscriptionForm(DiarizationFields, FormModel):
    """OpenAI's transcription (and translation) request, plus the extensions ``vad_filter`` and ``fit_context``.

    Every OpenAI field works or is refused by name: ``include=logprobs`` (json only), ``keywords`` (joined into
    Whisper's prompt), ``languages`` (a detection whitelist), ``chunking_strategy`` (``auto`` or a bare
    ``server_vad``: VAD chunking, as ``vad_filter``); ``known_speaker_*`` belong to the diarize model."""

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
    include: list[Include] = Field(default_factory=list, description=f"logprobs: each text token's log-probability "
                                   f"(response_format=json only); also sent as include[]. {TRANSCRIPTION}")
    keywords: list[str] = Field(default_factory=list, max_length=100, description=f"Words or phrases to guide the "
                                f"transcription: joined after the prompt into Whisper's initial prompt; also sent as "
                                f"keywords[]. {TRANSCRIPTION}")
    languages: list[Annotated[str, Field(max_length=16)]] = Field(
        default_factory=list, max_length=32, description=f"Possible ISO-639-1 languages: detection picks among "
        f"these (one is as language); also sent as languages[]. {TRANSCRIPTION}")
    chunking_strategy: Annotated[str | None, FormObject()] = Field(
        None, description=f"auto, or a server_vad object without tuning fields (JSON, or chunking_strategy[type]): "
        f"the audio cut at the VAD's silences (as vad_filter). {TRANSCRIPTION}")
    known_speaker_names: list[str] = Field(default_factory=list, description=f"The diarize model's only (refused "
                                           f"for the others). {TRANSCRIPTION}")
    known_speaker_references: list[str] = Field(default_factory=list, description=f"The diarize model's only "
                                                f"(refused for the others). {TRANSCRIPTION}")
    vad_filter: bool = Field(False, description=f"{EXTENSION}: skip non-speech with Silero VAD")
    fit_context: bool = Field(False, description=f"{EXTENSION}: encode a short window over its own length "
                              "(faster-whisper)")

    @model_validator(mode="after")
    def _granularities_need_verbose(self) -> TranscriptionForm:
        if self.timestamp_granularities and self.response_format != "verbose_json":
            raise InvalidRequest("timestamp_granularities needs response_format=verbose_json",
                                 param="timestamp_granularities")
        return self

    @model_validator(mode="after")
    def _logprobs_need_json(self) -> TranscriptionForm:
        if self.include and self.response_format != "json":
            raise InvalidRequest(f"include[]=logprobs is only supported with response_format=json, not "
                                 f"'{self.response_format}'", param="include", code="unsupported_value")
        return self

    def language_choice(self, task: str) -> tuple[str | None, str | None]:
        """(``language``, ``languages`` comma-separated) as Whisper takes them: one language of ``languages`` is
        the language; ``language`` outside ``languages`` a 400; translations detect freely."""
        if task != "transcribe":
            return None, None
        languages = [code.lower() for code in self.languages]
        language = self.language.lower() if self.language else None
        if language and languages and language not in languages:
            raise InvalidRequest(f"'language' {language!r} is not one of 'languages'", param="language")
        if len(languages) == 1:
            language, languages = language or languages[0], []
        return language, ",".join(languages) or None

    def whisper_prompt(self, task: str) -> str | None:
        """Whisper's initial prompt: ``prompt``, then ``keywords`` (transcriptions) joined by commas."""
        keywords = ", ".join(self.keywords) if task == "transcribe" else ""
        return " ".join(p for p in (self.prompt, keywords) if p) or None

    def uses_vad_chunking(self) -> bool:
        """``chunking_strategy`` as this engine honours it: ``auto``, or ``{"type": "server_vad"}`` with no
        tuning fields (their VAD settings are the model's own), cuts at the VAD's silences; else a 400 naming it."""
        if self.chunking_strategy is None:
            return False
        for key in server_vad_fields(self.chunking_strategy):
            if key != "type":
                refuse_unsupported(f"chunking_strategy.{key}"[:64], f"chunking_strategy.{key} is not supported: "
                                   "VAD chunking here uses the model's own VAD settings")
        return True


def server_vad_fields(raw: str) -> dict[str, Any]:
    """``chunking_strategy`` read: ``auto`` is no fields (the VAD's own settings), ``{"type": "server_vad", ...}``
    its fields but ``type``; anything else a 400 naming ``chunking_strategy``."""
    if raw == "auto":
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict) or value.get("type") != "server_vad":
        raise InvalidRequest("'chunking_strategy' must be 'auto' or a JSON object with type 'server_vad'",
                             param="chunking_strategy")
    return {key: number for key, number in value.items() if key != "type"}


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
