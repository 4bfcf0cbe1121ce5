"""Realtime transcription session fields honoured or refused by name (issue 24, items 4-5): ``include`` with
``item.input_audio_transcription.logprobs`` gives deltas and completed transcripts their tokens'
log-probabilities (Whisper's own scores); noise reduction and unknown fields are ``error`` events naming them.
Real models (Whisper tiny.en, Silero VAD), events parsed with the openai SDK's types."""

from __future__ import annotations

import base64
import json

import pytest

from tests.integration.test_realtime import (  # noqa: F401  (the module's fixtures, shared)
    LONG,
    SHORT,
    _session,
    completed_count,
    heard,
    router,
    run,
    sdk_parse,
    speech,
)
from tests.realtime_client import events_until, of_type, send_audio

pytestmark = pytest.mark.slow

INCLUDE = ["item.input_audio_transcription.logprobs"]


def _joined(logprobs) -> str:
    return b"".join(bytes(int(b) for b in item.bytes) for item in logprobs).decode("utf-8")


def _check(logprobs, text: str) -> None:
    assert logprobs, "no logprobs"
    assert all(item.logprob <= 0.0 for item in logprobs)
    assert _joined(logprobs).split() == text.split(), (_joined(logprobs), text)


def test_include_logprobs_on_deltas_and_completed(router, speech):
    async def go():
        ws, _ = await _session(router.url)
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription",
                                                                        "include": INCLUDE}}))
        updated = await events_until(ws, lambda got: got and got[-1]["type"] == "session.updated")
        await send_audio(ws, speech["long"][24000], 24000)
        got = await events_until(ws, completed_count(1), timeout=120)
        await ws.close()
        return updated[-1], got

    updated, got = run(go())
    assert sdk_parse(updated).session.include == INCLUDE
    assert not of_type(got, "error")
    (done,) = [sdk_parse(e) for e in of_type(got, "conversation.item.input_audio_transcription.completed")]
    assert heard(LONG, done.transcript)
    _check(done.logprobs, done.transcript)
    deltas = [sdk_parse(e) for e in of_type(got, "conversation.item.input_audio_transcription.delta")]
    assert deltas
    for delta in deltas:  # each delta: the tokens of its own words
        _check(delta.logprobs, delta.delta)


def test_no_logprobs_unless_included(router, speech):
    async def go():
        ws, _ = await _session(router.url)
        await ws.send(json.dumps({"type": "session.update", "session": {
            "type": "transcription", "audio": {"input": {"turn_detection": None}}}}))
        await events_until(ws, lambda got: got and got[-1]["type"] == "session.updated")
        await send_audio(ws, speech["short"][24000], 24000, speed=None)
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        got = await events_until(ws, completed_count(1))
        await ws.close()
        return got

    got = run(go())
    (done,) = of_type(got, "conversation.item.input_audio_transcription.completed")
    assert "logprobs" not in done and heard(SHORT, done["transcript"])
    assert all("logprobs" not in e for e in of_type(got, "conversation.item.input_audio_transcription.delta"))


@pytest.mark.parametrize("event, param", [
    ({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "noise_reduction": {"type": "near_field"}}}}}, "session.audio.input.noise_reduction"),
    ({"type": "transcription_session.update", "session": {"input_audio_noise_reduction": {"type": "far_field"}}},
     "session.input_audio_noise_reduction"),
    ({"type": "session.update", "session": {"type": "transcription", "instructions": "be brief"}},
     "session.instructions"),
    ({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "turn_detection": {"type": "semantic_vad", "eagerness": "high"}}}}},
     "session.audio.input.turn_detection.eagerness"),
    ({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "transcription": {"model": "whisper-1", "languag": "en"}}}}}, "session.audio.input.transcription.languag"),
    ({"type": "session.update", "session": {"type": "transcription", "include": ["item.bogus"]}},
     "session.include.0"),
])
def test_unsupported_session_fields_are_refused_by_name(router, event, param):
    async def go():
        ws, _ = await _session(router.url)
        await ws.send(json.dumps({**event, "event_id": "evt_1"}))
        got = await events_until(ws, lambda got: got and got[-1]["type"] in ("error", "session.updated",
                                                                             "transcription_session.updated"))
        await ws.close()
        return got[-1]

    last = run(go())
    assert last["type"] == "error", last
    sdk_parse(last)
    assert last["error"]["param"] == param and last["error"]["event_id"] == "evt_1"


def test_the_official_sdk_realtime_client_gets_logprobs(router, speech):
    from openai import AsyncOpenAI

    async def go():
        client = AsyncOpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0)
        async with client.realtime.connect(model="whisper-1", extra_query={"intent": "transcription"}) as conn:
            await conn.session.update(session={"type": "transcription", "include": INCLUDE, "audio": {"input": {
                "turn_detection": None, "noise_reduction": None,
                "transcription": {"model": "whisper-1", "language": "en"}}}})
            pcm = speech["short"][24000]
            for i in range(0, len(pcm), 9600):
                await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i:i + 9600]).decode())
            await conn.input_audio_buffer.commit()
            async for event in conn:
                assert event.type != "error", event
                if event.type == "conversation.item.input_audio_transcription.completed":
                    return event
        raise AssertionError("the connection ended without a transcript")

    done = run(go())
    assert heard(SHORT, done.transcript)
    _check(done.logprobs, done.transcript)
