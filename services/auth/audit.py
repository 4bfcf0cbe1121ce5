"""The audit trail: one JSON line per request (never its audio or text), to stdout, a file or the database."""

from __future__ import annotations

import json
import sys
import threading
from typing import Any, Protocol

from sqlalchemy import insert

from services.auth.guard import RequestRecord
from services.store.db import Database
from services.store.schema import audit_log

# Bits per second of the router's compressed output (services/core/audio/encode.py's encoder settings).
_BIT_RATES = {"audio/mpeg": (64000, 128000), "audio/ogg": (48000, 64000), "audio/opus": (48000, 64000),
              "audio/aac": (96000, 96000)}


def audio_out_seconds(record: RequestRecord) -> float | None:
    """Seconds of audio in a response body: exact for pcm and wav, from the bit rate for mp3, opus and aac,
    an estimate for flac (about 60 % of pcm's size for speech)."""
    return audio_seconds_of(record.content_type, record.sample_rate, record.body_bytes)


def audio_seconds_of(content_type: str, rate: int | None, nbytes: int) -> float | None:
    """Seconds of audio in ``nbytes`` of ``content_type`` at ``rate`` (see ``audio_out_seconds``)."""
    kind = content_type.split(";")[0].strip().lower()
    if not kind.startswith("audio/") or not nbytes:
        return None
    if kind in _BIT_RATES:
        low, high = _BIT_RATES[kind]
        return nbytes * 8 / (low if (rate or 48000) <= 24000 else high)
    if not rate:
        return None
    if kind in ("audio/pcm", "audio/l16"):
        return nbytes / (2 * rate)
    if kind in ("audio/wav", "audio/x-wav", "audio/wave"):
        return max(0, nbytes - 44) / (2 * rate)
    if kind == "audio/flac":
        return nbytes / (2 * rate * 0.6)
    return None


def audit_entry(record: RequestRecord, duration_ms: float) -> dict[str, Any]:
    return {"time": record.started, "request_id": record.request_id,
            "key_id": record.key.id if record.key else None, "method": record.method, "route": record.route,
            "model": record.model, "status": record.status,
            "audio_seconds_in": _round(record.audio_seconds_in), "audio_seconds_out": _round(record.audio_seconds_out),
            "characters": record.characters, "queue_ms": _round(record.queue_ms),
            "compute_ms": _round(record.compute_ms), "upstream_ms": _round(record.upstream_now_ms()),
            "duration_ms": round(duration_ms, 1), "client": record.client,
            "turns": record.turns, "trace_id": record.trace_id}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class AuditSink(Protocol):
    def write(self, entry: dict[str, Any]) -> None: ...


class StreamSink:
    """JSON lines to a stream (stdout) or an append-only file, one whole line per write."""

    def __init__(self, path: str | None = None) -> None:
        self._lock = threading.Lock()
        self._stream = open(path, "a", buffering=1, encoding="utf-8") if path else sys.stdout

    def write(self, entry: dict[str, Any]) -> None:
        line = json.dumps({"type": "audit", **entry}, separators=(",", ":")) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()


class DatabaseSink:
    def __init__(self, db: Database) -> None:
        self.db = db

    def write(self, entry: dict[str, Any]) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(insert(audit_log).values(**entry))


class NoSink:
    def write(self, entry: dict[str, Any]) -> None:
        pass
