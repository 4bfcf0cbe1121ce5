"""What a quota hold reserves before the work: a recording's stated length, and speech estimated from its text, which
must cover what the built-in voices really make (else concurrent requests could pass a quota by more than one)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile

from services.auth.estimates import covered, speech_seconds, upload_seconds
from services.core.audio import encode_audio
from services.core.contracts.errors import InvalidRequest
from tests.speech import SENTENCES, espeak, synthesize, wav_bytes

TEXTS = [*SENTENCES, "Hello.", "Call 555-1234 at 10:30 on 2024-05-06.", "A. B. C. D.", "I have 3 cats 🐈 and 2 dogs."]


@pytest.mark.parametrize("text", TEXTS)
def test_the_speech_estimate_covers_what_piper_and_espeak_make(text):
    piper, rate = synthesize(text)
    robot, robot_rate = espeak(text, "en")
    estimate = speech_seconds(text)
    assert estimate >= len(piper) / rate and estimate >= len(robot) / robot_rate
    assert estimate <= 2.0 * max(len(piper) / rate, len(robot) / robot_rate)  # not so loose it blocks concurrency
    assert speech_seconds(text, speed=2.0) == pytest.approx(estimate / 2)


def test_a_recording_holds_its_stated_length_or_the_models_limit():
    audio = np.zeros(16000 * 3, dtype=np.float32)
    assert upload_seconds(wav_bytes(audio, 16000), 7200) == pytest.approx(3 * 1.02 + 0.25)
    flac = io.BytesIO()
    soundfile.write(flac, audio, 16000, format="FLAC")
    assert upload_seconds(flac.getvalue(), 7200) == pytest.approx(3 * 1.02 + 0.25)
    mp3 = encode_audio(np.sin(np.arange(16000 * 5) / 10).astype(np.float32) * 0.3, 16000, "mp3")
    assert 5.0 <= upload_seconds(mp3, 7200) <= 5.5
    assert upload_seconds(wav_bytes(audio, 16000), 2.0) == 2.0  # never past the model's limit
    assert upload_seconds(b"not audio at all", 600) == 600  # no header: the whole limit


async def test_a_recording_longer_than_its_hold_is_held_again_before_it_is_decoded_whole():
    calls, more = [], []

    async def call(cap):
        calls.append(cap)
        if cap is not None:
            raise InvalidRequest("too long", code="audio_too_long")
        return "done"

    async def hold_more(seconds):
        more.append(seconds)

    assert await covered(call, 3.0, 60.0, hold_more) == "done"
    assert calls == [3.0, None] and more == [57.0]
    calls.clear()
    assert await covered(call, None, 60.0, hold_more) == "done" and calls == [None]  # nothing held: no cap
    calls.clear()
    assert await covered(call, 60.0, 60.0, hold_more) == "done" and calls == [None]  # the limit holds it all
