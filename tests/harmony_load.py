"""A short, real load on a ``harmony serve`` so that its metrics have something to say: transcriptions (several at
once, so Whisper batches and packs), speech, VAD, a realtime session with one turn, a 400, and a 429 (a request whose
deadline the busy model cannot meet). Used by the dashboard and alert tests."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.realtime_client import events_until, of_type, pcm16, send_audio, ws_url
from tests.speech import silence, synthesize, wav_bytes

TEXT = "The quick brown fox jumps over the lazy dog."


def transcribe(url: str, wav: bytes, model: str = "whisper-tiny.en", headers: dict | None = None) -> httpx.Response:
    return httpx.post(url + "/v1/audio/transcriptions", files={"file": ("a.wav", wav, "audio/wav")},
                      data={"model": model}, headers=headers or {}, timeout=120)


def until_busy(url: str, model: str, requests: int, timeout: float = 30.0, uds: str | None = None) -> None:
    """Wait until ``model`` has at least ``requests`` admitted and not answered (the services' own gauge); ``uds``:
    the router listens on that Unix socket (``url`` then names no host)."""
    until_gauge(url, "/metrics/services", "harmony_in_flight_requests", {"model": model}, requests, timeout, uds)


def until_gauge(url: str, path: str, name: str, labels: dict[str, str], at_least: float, timeout: float = 30.0,
                uds: str | None = None) -> None:
    """Wait until the sample ``name`` with ``labels`` of the metrics at ``url + path`` is at least ``at_least``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with httpx.Client(transport=httpx.HTTPTransport(uds=uds) if uds else None, timeout=5) as client:
            text = client.get(url + path).text
        if any(s.name == name and labels.items() <= s.labels.items() and s.value >= at_least
               for family in text_string_to_metric_families(text) for s in family.samples):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{name}{labels} never reached {at_least}")


def realtime_turn(url: str, audio: np.ndarray, rate: int) -> list[dict]:
    pcm = pcm16(np.concatenate([silence(0.3, rate), audio, silence(1.2, rate)]), rate, 24000)

    async def go() -> list[dict]:
        async with websockets.connect(ws_url(url)) as ws:
            await ws.recv()
            await send_audio(ws, pcm, 24000, speed=None)
            return await events_until(
                ws, lambda got: of_type(got, "conversation.item.input_audio_transcription.completed"), timeout=120)

    return asyncio.run(go())


def short_load(url: str) -> dict[str, int]:
    """The load; the status codes it got, by what was asked (each asserted by the caller as it needs)."""
    audio, rate = synthesize(TEXT)
    wav = wav_bytes(audio, rate)
    long_wav = wav_bytes(np.concatenate([audio, silence(0.5, rate)] * 8), rate)
    codes: dict[str, int] = {}
    codes["first"] = transcribe(url, wav).status_code  # the model learns how long its work takes
    with ThreadPoolExecutor(6) as pool:
        busy = [pool.submit(transcribe, url, long_wav) for _ in range(3)]
        short = [pool.submit(transcribe, url, wav) for _ in range(2)]
        until_busy(url, "whisper-tiny.en", 3)
        late = transcribe(url, wav, headers={"X-Harmony-Timeout": "0.3"})  # the busy model cannot make it: 429
        codes["deadline"] = late.status_code
        codes["transcriptions"] = max(f.result().status_code for f in busy + short)
    speech = httpx.post(url + "/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": TEXT},
                        timeout=120)
    codes["speech"] = speech.status_code
    codes["vad"] = httpx.post(url + "/v1/audio/vad", files={"file": ("a.wav", wav, "audio/wav")},
                              timeout=60).status_code
    codes["bad_request"] = httpx.post(url + "/v1/audio/speech", json={"model": "tts-1", "voice": "alloy",
                                                                     "input": "  "}, timeout=30).status_code
    events = realtime_turn(url, audio, rate)
    codes["realtime"] = 200 if of_type(events, "conversation.item.input_audio_transcription.completed") else 0
    return codes
