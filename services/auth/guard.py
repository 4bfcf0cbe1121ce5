"""What one request may do, checked where the router learns it: the key (set by the middleware for the
request's task), the model it names (checked by the model table when it resolves a public name), and
the registered voices it touches. Handlers also note the request's usage here for the audit line.

The request's ``RequestRecord`` is the request field ``REQUEST_RECORD`` (:mod:`services.core.runtime.request_state`):
``services.auth.middleware.AuthAuditMiddleware`` binds it for the request, and every function here reads it, so a
route that calls one of them depends on it (``current()`` answers it, None outside a request the middleware saw)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from services.auth.keys import ApiKey
from services.core.contracts.errors import HarmonyError, NotFound
from services.core.runtime.logs import note_model
from services.core.runtime.request_state import RequestField

if TYPE_CHECKING:
    from services.auth.gate import Gate
    from services.auth.limits import VoiceOwners
    from services.auth.quota import Hold


class Unauthorized(HarmonyError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class Forbidden(HarmonyError):
    status_code = 403
    error_type = "permission_error"
    default_code = "permission_denied"


class RateLimited(HarmonyError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class QuotaExhausted(HarmonyError):
    status_code = 429
    error_type = "insufficient_quota"
    default_code = "insufficient_quota"


@dataclass
class RequestRecord:
    """One request as the audit trail sees it: never its audio or text, only their sizes."""

    request_id: str
    method: str
    route: str
    client: str | None
    started: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)
    gate: Gate | None = None
    key: ApiKey | None = None
    model: str | None = None
    status: int = 0
    audio_seconds_in: float | None = None
    audio_seconds_out: float | None = None
    characters: int | None = None
    queue_ms: float | None = None
    compute_ms: float | None = None
    upstream_ms: float | None = None  # time with a model service call outstanding (overlapping calls counted once)
    upstream_open: int = 0  # model service calls outstanding now
    upstream_since: float = 0.0  # time.monotonic() when the outstanding ones began
    content_type: str = ""
    sample_rate: int | None = None
    body_bytes: int = 0
    finished: bool = False
    extra_headers: dict[str, str] = field(default_factory=dict)
    holds: list[Hold] = field(default_factory=list)  # audio reserved against the key's quota, settled at the end
    settled_in: float = 0.0   # audio seconds in already charged (a realtime session's turns, as each ended)
    turns: int | None = None  # a realtime session's transcribed turns
    trace_id: str | None = None  # the request's trace (32 hex digits) when tracing is on (core/runtime/tracing.py)

    def upstream_now_ms(self) -> float | None:
        """The time spent waiting on model services so far, an outstanding call's time up to now included."""
        if not self.upstream_open:
            return self.upstream_ms
        return (self.upstream_ms or 0.0) + (time.monotonic() - self.upstream_since) * 1000

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.started_monotonic) * 1000


REQUEST_RECORD: RequestField[RequestRecord] = RequestField(
    "request_record", "the router request's audit record: its API key, usage and quota holds (AuthAuditMiddleware)")


def current() -> RequestRecord | None:
    """The current request's record, None outside a request the AuthAuditMiddleware saw."""
    return REQUEST_RECORD.get()


def note_usage(*, audio_seconds_in: float | None = None, audio_seconds_out: float | None = None,
               characters: int | None = None, queue_ms: float | None = None, compute_ms: float | None = None) -> None:
    """Handlers tell the audit trail what they learned; a figure left out (None) keeps what the record had."""
    record = REQUEST_RECORD.get()
    if record is None:
        return
    if audio_seconds_in is not None:
        record.audio_seconds_in = audio_seconds_in
    if audio_seconds_out is not None:
        record.audio_seconds_out = audio_seconds_out
    if characters is not None:
        record.characters = characters
    if queue_ms is not None:
        record.queue_ms = queue_ms
    if compute_ms is not None:
        record.compute_ms = compute_ms


def _metered() -> tuple[RequestRecord, Gate] | None:
    record = REQUEST_RECORD.get()
    if record is None or record.key is None or record.gate is None or record.gate.quota is None:
        return None
    return record, record.gate


async def reserve_audio(estimate: Callable[[], float]) -> float | None:
    """Hold the audio seconds this request's work will be charged (``estimate()``, computed in a worker thread and
    only when the key has an audio quota) before it is computed: 429 ``insufficient_quota`` when the key's settled
    usage spent its quota, 429 ``quota_held`` when its requests in flight (on every router) hold the rest. The hold
    is settled to the real figure when the response ends, or released when the request fails or its client leaves.
    The seconds held, or None when nothing is held (no key, or a key without an audio quota)."""
    found = _metered()
    if found is None or not found[0].key.metered:  # type: ignore[union-attr]
        return None
    record, gate = found
    return await asyncio.to_thread(gate.reserve, record, estimate)


async def reserve_turn(seconds: float) -> Hold | None:
    """A realtime turn's seconds held before it is transcribed, and the turn counted in the key's minute:
    RateLimited past the key's rpm, QuotaExhausted when its quota is spent. None when nothing is held."""
    found = _metered()
    if found is None:
        return None
    record, gate = found
    return await asyncio.to_thread(gate.reserve_turn, record, seconds)


async def settle_turn(hold: Hold | None, seconds: float) -> None:
    """A transcribed turn charged now (its hold settled to ``seconds``); the session's audit line counts it."""
    record = REQUEST_RECORD.get()
    if record is None:
        return
    if _metered() is not None and record.gate is not None:
        await asyncio.to_thread(record.gate.settle_turn, record, hold, seconds)
    record.settled_in += seconds
    record.turns = (record.turns or 0) + 1
    record.audio_seconds_in = round(record.settled_in, 3)


async def release_hold(hold: Hold | None) -> None:
    """A turn's hold given back (its transcription failed or was abandoned): nothing is charged."""
    found = _metered()
    if found is not None and hold is not None:
        await asyncio.to_thread(found[1].release, found[0], hold)


async def open_session() -> None:
    """Count one more open realtime session of the request's key (429 ``too_many_sessions`` past the limit); the
    count goes down when the session's request ends."""
    found = _metered()
    if found is not None:
        await asyncio.to_thread(found[1].open_session, found[0])


def add_timing(queue_ms: float, compute_ms: float) -> None:
    """Add a model service's queue and compute time (its answer's headers) to the request's audit line."""
    record = REQUEST_RECORD.get()
    if record is not None:
        record.queue_ms = (record.queue_ms or 0.0) + queue_ms
        record.compute_ms = (record.compute_ms or 0.0) + compute_ms


@contextmanager
def upstream_call() -> Iterator[None]:
    """One call to a model service (until its answer's head, or its whole body when read at once), into the
    request's ``upstream`` time: the wall time with any call outstanding, so calls made at once count once."""
    record = REQUEST_RECORD.get()
    if record is None:
        yield
        return
    if record.upstream_open == 0:
        record.upstream_since = time.monotonic()
    record.upstream_open += 1
    try:
        yield
    finally:
        record.upstream_open -= 1
        if record.upstream_open == 0:
            record.upstream_ms = (record.upstream_ms or 0.0) + (time.monotonic() - record.upstream_since) * 1000


def check_model(lookup: Callable[[str], str | None], requested: str, served: str | None = None) -> None:
    """403 model_not_allowed when the request's key may not use ``requested`` (or the model that serves it).

    A key's allowed list names public models, aliases or SpeechRoutes; a name and whatever ``lookup`` resolves it
    to (its model: an alias, or a dated snapshot of one, as routing resolves it) are one model.
    """
    record = REQUEST_RECORD.get()
    if record is None:
        return
    if record.model is None:
        record.model = requested
        note_model(requested)  # the request's log lines name it
    key = record.key
    if key is None or not key.models:
        return
    allowed = set(key.models) | {lookup(name) or name for name in key.models}
    for name in (requested, served):
        if name is not None and name not in allowed and (lookup(name) or name) not in allowed:
            raise Forbidden(f"this API key may not use model '{name}' (allowed: {', '.join(key.models)})",
                            param="model", code="model_not_allowed")


def _voice_owners() -> tuple[ApiKey, VoiceOwners] | None:
    """The request's key and the store of who registered which voice (a key comes from a database: so do they)."""
    record = REQUEST_RECORD.get()
    if record is None or record.key is None or record.gate is None or record.gate.owners is None:
        return None
    return record.key, record.gate.owners


VOICE_ID = re.compile(r"voice_[A-Za-z0-9_.-]{1,64}")


async def check_voice(voice_id: str) -> None:
    """404 unless the request's key registered this voice (admin keys see every voice).

    An id no store could have made (control characters, slashes, spaces: things that would reach a model
    service's URL) is no registered voice, whoever asks."""
    if not VOICE_ID.fullmatch(voice_id):
        raise NotFound(f"no registered voice {voice_id!r}", param="voice", code="voice_not_found")
    found = _voice_owners()
    if found is None or found[0].admin:
        return
    key, owners = found
    if await asyncio.to_thread(owners.owner, voice_id) != key.id:
        raise NotFound(f"no registered voice '{voice_id}'", param="voice", code="voice_not_found")


async def claim_voice(voice_id: str) -> None:
    found = _voice_owners()
    if found is not None:
        await asyncio.to_thread(found[1].set, voice_id, found[0].id)


async def forget_voice(voice_id: str) -> None:
    found = _voice_owners()
    if found is not None:
        await asyncio.to_thread(found[1].forget, voice_id)


async def visible_voices(voice_ids: list[str]) -> set[str]:
    """The registered voices the request's key may see."""
    found = _voice_owners()
    if found is None or found[0].admin:
        return set(voice_ids)
    return set(voice_ids) & await asyncio.to_thread(found[1].of, found[0].id)
