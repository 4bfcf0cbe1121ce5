"""The events of an OpenAI Realtime transcription session, as they travel over the socket.

Client events are parsed here (a bad one is a ``RealtimeError``, answered as an ``error`` event and the socket
stays open); server events are built here with OpenAI's field names (``event_id``, ``item_id``,
``content_index``, ``previous_item_id``, ``audio_start_ms``, ``audio_end_ms``, ``transcript``, ``usage``).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from typing import Any

from services.core.contracts.errors import HarmonyError, InvalidRequest

CLIENT_EVENTS = ("session.update", "transcription_session.update", "input_audio_buffer.append",
                 "input_audio_buffer.commit", "input_audio_buffer.clear")
MAX_EVENT_ID = 128


class RealtimeError(InvalidRequest):
    """A client event the session cannot take; ``event_id`` is the client's, echoed in the error."""

    default_code = "invalid_value"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 event_id: str | None = None) -> None:
        super().__init__(message, param=param, code=code)
        self.event_id = event_id


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def parse_client_event(text: str | bytes) -> dict[str, Any]:
    """A client message -> its JSON object with a known ``type``; else a RealtimeError."""
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):
        raise RealtimeError("the message is not valid JSON", code="invalid_json") from None
    if not isinstance(event, dict):
        raise RealtimeError("an event is a JSON object with a 'type'", code="invalid_json")
    event_id = event.get("event_id")
    if event_id is not None and (not isinstance(event_id, str) or len(event_id) > MAX_EVENT_ID):
        raise RealtimeError(f"'event_id' must be a string of at most {MAX_EVENT_ID} characters", param="event_id")
    kind = event.get("type")
    if not isinstance(kind, str) or not kind:
        raise RealtimeError("the event has no 'type'", param="type", code="missing_required_parameter",
                            event_id=event_id)
    if kind not in CLIENT_EVENTS:
        shown = kind[:64]
        raise RealtimeError(f"Invalid value: '{shown}'. A transcription session takes: {', '.join(CLIENT_EVENTS)}",
                            param="type", event_id=event_id)
    return event


def pcm16_of(event: dict[str, Any]) -> bytes:
    """The bytes of an ``input_audio_buffer.append``: base64 of 16-bit little-endian PCM."""
    audio = event.get("audio")
    if not isinstance(audio, str):
        raise RealtimeError("'audio' must be a base64 string", param="audio",
                            code="missing_required_parameter" if audio is None else "invalid_value",
                            event_id=event.get("event_id"))
    try:
        pcm = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise RealtimeError("'audio' is not valid base64", param="audio", event_id=event.get("event_id")) from None
    if len(pcm) % 2:
        raise RealtimeError("'audio' must be whole 16-bit samples (an even number of bytes)", param="audio",
                            event_id=event.get("event_id"))
    return pcm


def server_event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": new_id("event"), **fields}


def error_event(exc: HarmonyError) -> dict[str, Any]:
    """OpenAI's ``error`` event: the error's type, code, message and param, and the client's event id."""
    error = exc.to_body()["error"]
    error["event_id"] = getattr(exc, "event_id", None)
    return server_event("error", error=error)


def speech_started(item_id: str, audio_start_ms: int) -> dict[str, Any]:
    return server_event("input_audio_buffer.speech_started", audio_start_ms=audio_start_ms, item_id=item_id)


def speech_stopped(item_id: str, audio_end_ms: int) -> dict[str, Any]:
    return server_event("input_audio_buffer.speech_stopped", audio_end_ms=audio_end_ms, item_id=item_id)


def committed(item_id: str, previous_item_id: str | None) -> dict[str, Any]:
    return server_event("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous_item_id)


def cleared() -> dict[str, Any]:
    return server_event("input_audio_buffer.cleared")


def delta(item_id: str, text: str, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A piece of a turn's transcript; ``logprobs`` (the session's ``include``) its tokens'."""
    return server_event("conversation.item.input_audio_transcription.delta", item_id=item_id, content_index=0,
                        delta=text, **({"logprobs": logprobs} if logprobs is not None else {}))


def completed(item_id: str, transcript: str, seconds: float, logprobs: list[dict[str, Any]] | None = None
              ) -> dict[str, Any]:
    return server_event("conversation.item.input_audio_transcription.completed", item_id=item_id,
                        content_index=0, transcript=transcript,
                        usage={"type": "duration", "seconds": round(seconds, 3)},
                        **({"logprobs": logprobs} if logprobs is not None else {}))


def failed(item_id: str, exc: HarmonyError) -> dict[str, Any]:
    return server_event("conversation.item.input_audio_transcription.failed", item_id=item_id, content_index=0,
                        error=exc.to_body()["error"])
