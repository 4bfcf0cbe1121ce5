"""Issue 9 item 7, proof: a corpus of bad input against ``harmony serve`` through the public API.

Every bad request is refused with a 4xx (never a 5xx; 413 where the upload limit applies) in OpenAI's
error shape, and the engine answers a normal request right after it. Valid audio in odd codecs is
transcribed (200) with a sane duration.
"""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.bad_inputs import CASES, ODD_AUDIO, pcm_wav


@pytest.fixture(scope="module")
def http(harmony):
    with httpx.Client(base_url=harmony.url, timeout=30) as client:
        yield client


def declared_only(url: str, method: str, path: str, length: int) -> tuple[int, bytes]:
    """Send only the head of a request that declares ``length`` bytes of body, and read the answer.

    A client that streamed the whole body would race the server's early 413 and its close (a TCP reset
    can drop the answer); the limit is meant to answer before the body is read, so this is its proof."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        head = (f"{method} {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Length: {length}\r\n"
                "Content-Type: multipart/form-data; boundary=x\r\n\r\n")
        sock.sendall(head.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def send(http: httpx.Client, url: str, method: str, path: str, kwargs: dict) -> tuple[int, bytes]:
    if "declared_length" in kwargs:
        return declared_only(url, method, path, kwargs["declared_length"])
    response = http.request(method, path, **kwargs)
    return response.status_code, response.content


def assert_openai_error(body: bytes) -> None:
    error = json.loads(body)["error"]
    assert set(error) >= {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"].strip(), error
    assert error["type"] == "invalid_request_error", error


def assert_still_serving(http: httpx.Client) -> None:
    response = http.post("/v1/audio/vad", files={"file": ("ok.wav", pcm_wav(), "audio/wav")})
    assert response.status_code == 200, response.text
    assert response.json()["duration"] == pytest.approx(0.5, abs=0.05)


def test_corpus_is_large_enough():
    assert len(CASES) >= 40
    assert len({case[0] for case in CASES}) == len(CASES), "case ids must be unique"


@pytest.mark.parametrize(("method", "path", "build", "statuses"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused(harmony, http, method, path, build, statuses):
    status, body = send(http, harmony.url, method, path, build())
    assert status in statuses, (status, body[:500])
    assert_openai_error(body)
    assert_still_serving(http)


@pytest.mark.parametrize("name", list(ODD_AUDIO))
def test_odd_but_valid_audio_is_transcribed(http, name):
    data, filename, seconds = ODD_AUDIO[name]
    response = http.post("/v1/audio/transcriptions", files={"file": (filename, data, "application/octet-stream")},
                         data={"model": "whisper-tiny.en", "response_format": "verbose_json"})
    assert response.status_code == 200, response.text
    assert response.json()["duration"] == pytest.approx(seconds, abs=0.05)
    assert_still_serving(http)


def test_4096_emoji_are_not_a_server_error(http):
    """4096 characters is the limit, so 4096 emoji are within it; nothing in them is speakable."""
    response = http.post("/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": "\U0001F600" * 4096,
                                                   "response_format": "wav"})
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert_openai_error(response.content)
    assert_still_serving(http)
