"""POST /v1/audio/speech (JSON) and GET /v1/audio/voices: OpenAI's text-to-speech request, its events, and the
voice listing."""

from __future__ import annotations

import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.core.contracts.formats import CONTENT_TYPES, AudioFormat
from services.core.contracts.wire import JsonFloat, JsonInt, has_words, speakable
from services.core.http.unsupported import refuse_unsupported
from services.router.api.protocol.docs import EVENT_STREAM, EXTENSION, SPEECH, audio_content

MAX_INPUT_CHARS = 4096
OPENAI_PCM_RATE = 24000  # OpenAI's pcm is 24 kHz, 16-bit, mono: what its clients play it at


class SpeechRequest(BaseModel):
    """OpenAI's request body, plus the extensions ``language``, ``sample_rate`` and ``reference_audio``."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: str = Field(..., min_length=1, description=f"A text-to-speech model, alias, route or dated snapshot. "
                       f"{SPEECH}")
    input: str = Field(..., description=f"The text to speak, at most {MAX_INPUT_CHARS} characters. {SPEECH}")
    voice: str = Field(..., description=f"A voice of GET /v1/audio/voices, an OpenAI voice name, or a registered "
                       f"voice_... id. {SPEECH}")
    response_format: AudioFormat = Field("mp3", description=f"The audio format. {SPEECH}")
    speed: JsonFloat = Field(1.0, ge=0.25, le=4.0, description=f"Speed, 0.25 to 4.0. {SPEECH}")
    instructions: str | None = Field(None, description=f"Refused (400 naming it) when not empty: no backend here "
                                     f"follows free-form instructions. {SPEECH}")
    stream_format: Literal["audio", "sse"] = Field("audio", description=f"Raw audio, or server-sent "
                                                   f"speech.audio.delta/done events. {SPEECH}")
    language: str | None = Field(None, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]+)*$",
                                 description=f"{EXTENSION}: the language to speak (BCP 47)")
    sample_rate: JsonInt | None = Field(None, ge=8000, le=48000, description=f"{EXTENSION}: the output sample rate")
    reference_audio: str | None = Field(None, description=f"{EXTENSION}: base64 audio of the voice to clone")

    @field_validator("voice", mode="before")
    @classmethod
    def _voice_object(cls, value: Any) -> Any:
        return value.get("id") if isinstance(value, dict) else value  # newer SDKs may send {"id": ...}

    @field_validator("instructions")
    @classmethod
    def _no_instructions(cls, value: str | None) -> str | None:
        if value and value.strip():
            refuse_unsupported("instructions", "'instructions' is not supported: no speech model here follows "
                               "free-form instructions")
        return None

    @field_validator("input")
    @classmethod
    def _input_length(cls, value: str) -> str:
        value = speakable(value)
        if not any(not ch.isspace() and unicodedata.category(ch) != "Cf" for ch in value):
            raise ValueError("input must not be empty")
        if not has_words(value):
            raise ValueError("input has nothing to speak: no letters, digits or symbols, only punctuation")
        if len(value) > MAX_INPUT_CHARS:
            raise ValueError(f"input is {len(value)} characters; the maximum is {MAX_INPUT_CHARS}")
        return value

    @model_validator(mode="after")
    def _pcm_rate(self) -> SpeechRequest:
        if self.response_format == "pcm" and self.sample_rate is None:
            self.sample_rate = OPENAI_PCM_RATE
        return self


class SpeechUsage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


class SpeechAudioDelta(BaseModel):
    """``stream_format=sse``: a piece of the audio, base64."""

    type: Literal["speech.audio.delta"] = "speech.audio.delta"
    audio: str


class SpeechAudioDone(BaseModel):
    """``stream_format=sse``: the last event of a stream that succeeded."""

    type: Literal["speech.audio.done"] = "speech.audio.done"
    usage: SpeechUsage = Field(default_factory=SpeechUsage)


class SpeechError(BaseModel):
    """``stream_format=sse``: the last event of a stream that failed after it began (OpenAI's error object)."""

    type: Literal["error"] = "error"
    error: dict[str, Any]


class VoiceObject(BaseModel):
    """A voice of GET /v1/audio/voices: a backend's voice, or a registered (cloned) one (``backend: clone``)."""

    id: str
    object: Literal["voice"] = "voice"
    name: str
    model: str
    backend: str
    languages: list[str]
    neural: bool
    sample_rate: int | None = Field(None, description="a backend's voice: the rate it speaks at")
    created_at: int | None = Field(None, description="a registered voice: when it was registered")
    speech_seconds: float | None = Field(None, description="a registered voice: the speech it was made from")


class VoiceListResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[VoiceObject]


SPEECH_RESPONSES: dict[int | str, dict[str, Any]] = {200: {
    "description": "The audio in response_format; stream_format=sse: speech.audio.delta and speech.audio.done events",
    "content": {**audio_content(sorted(set(CONTENT_TYPES.values()))), **EVENT_STREAM}}}
