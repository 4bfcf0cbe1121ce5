"""Regressions for the server errors and slow paths the bad-input corpus (tests/e2e/test_bad_input_corpus.py) found."""

from __future__ import annotations

import asyncio
import struct
import time

import pytest
from pydantic import ValidationError

from services.auth.guard import check_voice
from services.core.audio import decode_audio
from services.core.contracts.errors import InvalidAudio, InvalidRequest, NotFound
from services.core.http.json_body import check_unicode
from services.router.api.protocol.speech import SpeechRequest


def wav_claiming_rate(rate: int, samples: int) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    data = bytes(2 * samples)
    return b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt \
        + b"data" + struct.pack("<I", len(data)) + data


def test_a_1_hz_header_is_refused_at_once():
    """Was: 16000 samples "at 1 Hz" decoded as 4.4 hours of audio, and Whisper transcribed it for minutes."""
    started = time.monotonic()
    with pytest.raises(InvalidAudio, match="sample rate of 1 Hz"):
        decode_audio(wav_claiming_rate(1, 16000))
    assert time.monotonic() - started < 5


def test_8_khz_audio_still_decodes():
    assert decode_audio(wav_claiming_rate(8000, 8000)).size == 16000


@pytest.mark.parametrize("voice_id", ["voice_\x00", "voice_../../etc/passwd", "voice_a b", "voice_", "voice_x?y=1"])
def test_malformed_voice_ids_are_no_registered_voice(voice_id):
    """Was: GET /v1/audio/voices/voice_%00 -> 500 (httpx.InvalidURL building the model service's URL)."""
    with pytest.raises(NotFound):
        asyncio.run(check_voice(voice_id))


@pytest.mark.parametrize("voice_id", ["voice_0123456789abcdef", "voice_a"])
def test_well_formed_voice_ids_pass(voice_id):
    asyncio.run(check_voice(voice_id))  # auth is off here: any well-formed id is checked by its store


@pytest.mark.parametrize("data", [{"input": "Hi \ud800"}, {"voice": "\udc00"}, {"x": ["\ud83d"]}])
def test_lone_surrogates_are_bad_requests(data):
    """Was: a lone surrogate escape in the JSON body -> 500 (UnicodeEncodeError, or pydantic on serializing)."""
    with pytest.raises(InvalidRequest, match="surrogate"):
        check_unicode(data)


@pytest.mark.parametrize("text", ["\u200b\u200c\u200d\ufeff", "\u200f\u202e\u200e", "\u2060 \u200b"])
def test_input_of_invisible_format_characters_is_empty(text):
    """Was: 200 with an empty mp3 for input made only of zero-width or direction marks."""
    with pytest.raises(ValidationError, match="must not be empty"):
        SpeechRequest(model="tts-1", voice="alloy", input=text)


def test_input_with_format_characters_and_words_is_kept():
    assert SpeechRequest(model="tts-1", voice="alloy", input="\u200fHello\u200b").input == "\u200fHello\u200b"
