"""A client of /v1/realtime for tests and bench/realtime.py: speech as pcm16 events, and the server's events."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import numpy as np
import soxr


def pcm16(audio: np.ndarray, rate: int, to_rate: int, peak: float = 0.5) -> bytes:
    """Mono float32 at ``rate`` -> 16-bit little-endian PCM at ``to_rate`` (scaled to ``peak``)."""
    out = soxr.resample(audio.astype(np.float32), rate, to_rate) if rate != to_rate else audio
    top = float(np.max(np.abs(out))) if out.size else 0.0
    out = out * (peak / top) if top > 0 else out
    return (np.clip(out, -1, 1) * 32767).astype("<i2").tobytes()


def ws_url(http_url: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"intent": "transcription", **params}.items())
    return http_url.replace("http://", "ws://", 1) + "/v1/realtime?" + query


def append(pcm: bytes) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})


async def send_audio(ws, pcm: bytes, rate: int, chunk_ms: int = 100, speed: float | None = 1.0) -> float:
    """Send ``pcm`` in ``chunk_ms`` appends, at ``speed`` times real time (None: as fast as possible); returns the
    monotonic time the last chunk left."""
    step = rate * 2 * chunk_ms // 1000
    started = time.monotonic()
    for i in range(0, len(pcm), step):
        if speed is not None:
            due = started + (i / (rate * 2)) / speed
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        await ws.send(append(pcm[i:i + step]))
    return time.monotonic()


async def events_until(ws, done: Any, timeout: float = 60.0) -> list[dict]:
    """The server's events until ``done(events)`` is true."""
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while not done(got):
        raw = await asyncio.wait_for(ws.recv(), timeout=max(0.1, deadline - time.monotonic()))
        got.append(json.loads(raw))
    return got


def of_type(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["type"] == kind]
