"""A transcription session's settings: updated by ``session.update`` (GA shape, ``type: transcription``) and
``transcription_session.update`` (beta shape), rendered back in the shape the client used.

Only the fields present in an update change; ``turn_detection: null`` turns server VAD off (the client commits).
Every field is honoured or refused by name (an ``error`` event): ``include`` takes
``item.input_audio_transcription.logprobs``; noise reduction is refused unless null (no denoiser runs here);
``semantic_vad`` runs as ``server_vad`` (its ``eagerness`` is refused); anything else unknown is refused.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.core.contracts.wire import JsonFloat, JsonInt
from services.router.realtime.events import RealtimeError

LOGPROBS = "item.input_audio_transcription.logprobs"
GA_FIELDS = ("type", "audio", "include")
GA_INPUT_FIELDS = ("format", "transcription", "turn_detection", "noise_reduction")
BETA_FIELDS = ("input_audio_format", "input_audio_sample_rate", "input_audio_transcription", "turn_detection",
               "input_audio_noise_reduction", "include", "modalities")
GA_NAMES = {"transcription": "audio.input.transcription", "turn_detection": "audio.input.turn_detection"}
BETA_NAMES = {"transcription": "input_audio_transcription"}
"""The session's settings as each shape names them (errors name the field as the client sent it)."""
SAMPLE_RATES = (24000, 16000)  # pcm16: OpenAI's 24 kHz, and 16 kHz (Whisper's and Silero's own rate)


class TurnDetection(BaseModel):
    """Server VAD (Silero) as OpenAI's ``server_vad``; ``semantic_vad`` is taken as ``server_vad``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: JsonFloat = Field(0.5, ge=0.0, le=1.0)
    prefix_padding_ms: JsonInt = Field(300, ge=0, le=5000)
    silence_duration_ms: JsonInt = Field(500, ge=32, le=10000)
    # a transcription session (OpenAI's too) creates no responses: nothing to create or interrupt, either value
    create_response: bool | None = Field(None, exclude=True)
    interrupt_response: bool | None = Field(None, exclude=True)


class Transcription(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, max_length=256)
    language: str | None = Field(None, max_length=16)
    prompt: str | None = Field(None, max_length=4096)


class SessionConfig(BaseModel):
    model_config = ConfigDict(validate_assignment=True)

    transcription: Transcription = Field(default_factory=Transcription)
    sample_rate: Literal[24000, 16000] = 24000
    turn_detection: TurnDetection | None = Field(default_factory=TurnDetection)
    include: list[Literal["item.input_audio_transcription.logprobs"]] = Field(default_factory=list)

    @property
    def logprobs(self) -> bool:
        return LOGPROBS in self.include

    def update(self, event: dict[str, Any]) -> None:
        """Apply a ``session.update`` or ``transcription_session.update``; a bad field is a RealtimeError naming it
        and leaves the settings as they were."""
        session = event.get("session")
        event_id = event.get("event_id")
        if not isinstance(session, dict):
            raise RealtimeError("'session' must be an object", param="session", event_id=event_id)
        try:
            changes = (_ga_changes if event["type"] == "session.update" else _beta_changes)(session, event_id)
            merged = self.model_validate({**self.model_dump(), **changes})
        except ValidationError as exc:
            error = exc.errors()[0]
            names = GA_NAMES if event["type"] == "session.update" else BETA_NAMES
            where = ".".join([names.get(str(error["loc"][0]), str(error["loc"][0])), *map(str, error["loc"][1:])])
            raise RealtimeError(f"'{where}': {error['msg']}", param=f"session.{where}", event_id=event_id) from None
        for name in type(self).model_fields:
            setattr(self, name, getattr(merged, name))

    def ga(self, session_id: str) -> dict[str, Any]:
        """The session as ``session.created`` / ``session.updated`` show it (GA)."""
        return {"type": "transcription", "id": session_id, "object": "realtime.transcription_session",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": self.sample_rate},
                                    "transcription": self.transcription.model_dump(),
                                    "turn_detection": self._turn_detection(),
                                    "noise_reduction": None}},
                "include": list(self.include)}

    def beta(self, session_id: str) -> dict[str, Any]:
        """The session as ``transcription_session.created`` / ``.updated`` show it (beta)."""
        return {"id": session_id, "object": "realtime.transcription_session", "modalities": ["text"],
                "input_audio_format": "pcm16", "input_audio_sample_rate": self.sample_rate,
                "input_audio_transcription": self.transcription.model_dump(),
                "turn_detection": self._turn_detection(), "input_audio_noise_reduction": None,
                "include": list(self.include)}

    def _turn_detection(self) -> dict[str, Any] | None:
        if self.turn_detection is None:
            return None
        return {**self.turn_detection.model_dump(), "type": "server_vad"}


def _ga_changes(session: dict[str, Any], event_id: str | None) -> dict[str, Any]:
    kind = session.get("type")
    if kind != "transcription":
        raise RealtimeError("this endpoint serves transcription sessions: 'session.type' must be 'transcription'",
                            param="session.type", event_id=event_id)
    _known(session, GA_FIELDS, "session", event_id)
    changes: dict[str, Any] = {"include": session["include"] or []} if "include" in session else {}
    audio = session.get("audio") or {}
    if isinstance(audio, dict):
        _known(audio, ("input",), "session.audio", event_id)
    inputs = audio.get("input") if isinstance(audio, dict) else None
    if inputs is None:
        return changes
    if not isinstance(inputs, dict):
        raise RealtimeError("'session.audio.input' must be an object", param="session.audio.input",
                            event_id=event_id)
    _known(inputs, GA_INPUT_FIELDS, "session.audio.input", event_id)
    _no_noise_reduction(inputs.get("noise_reduction"), "session.audio.input.noise_reduction", event_id)
    if "format" in inputs:
        fmt = inputs["format"]
        if not isinstance(fmt, dict) or fmt.get("type", "audio/pcm") != "audio/pcm":
            raise RealtimeError("'session.audio.input.format': only audio/pcm (16-bit, mono) is served",
                                param="session.audio.input.format", event_id=event_id)
        changes["sample_rate"] = _rate(fmt.get("rate", 24000), "session.audio.input.format.rate", event_id)
    if "transcription" in inputs:
        changes["transcription"] = inputs["transcription"] or {}
    if "turn_detection" in inputs:
        changes["turn_detection"] = inputs["turn_detection"]
    return changes


def _beta_changes(session: dict[str, Any], event_id: str | None) -> dict[str, Any]:
    _known(session, BETA_FIELDS, "session", event_id)
    _no_noise_reduction(session.get("input_audio_noise_reduction"), "session.input_audio_noise_reduction", event_id)
    if session.get("modalities") not in (None, ["text"]):
        raise RealtimeError("'session.modalities': a transcription session answers text only: ['text']",
                            param="session.modalities", code="unsupported_value", event_id=event_id)
    changes: dict[str, Any] = {"include": session["include"] or []} if "include" in session else {}
    if "input_audio_format" in session and session["input_audio_format"] != "pcm16":
        raise RealtimeError("'session.input_audio_format': only pcm16 is served", param="session.input_audio_format",
                            event_id=event_id)
    if "input_audio_sample_rate" in session:  # Harmony's own: pcm16 at 16 kHz
        changes["sample_rate"] = _rate(session["input_audio_sample_rate"], "session.input_audio_sample_rate",
                                       event_id)
    if "input_audio_transcription" in session:
        changes["transcription"] = session["input_audio_transcription"] or {}
    if "turn_detection" in session:
        changes["turn_detection"] = session["turn_detection"]
    return changes


def _known(fields: dict[str, Any], known: tuple[str, ...], where: str, event_id: str | None) -> None:
    """A field this session does not define is refused by name, never accepted and ignored."""
    for key in fields:
        if key not in known:
            raise RealtimeError(f"'{where}.{key[:64]}' is not supported by a transcription session here",
                                param=f"{where}.{key[:64]}", code="unknown_parameter", event_id=event_id)


def _no_noise_reduction(value: Any, param: str, event_id: str | None) -> None:
    if value is not None:
        raise RealtimeError(f"'{param}' is not supported: no noise reduction runs here (send null or leave it out)",
                            param=param, code="unsupported_parameter", event_id=event_id)


def _rate(value: Any, param: str, event_id: str | None) -> int:
    if type(value) is not int or value not in SAMPLE_RATES:
        raise RealtimeError(f"'{param}' must be one of {', '.join(map(str, SAMPLE_RATES))} (Hz)", param=param,
                            event_id=event_id)
    return value
