"""Issue 24, items 4-5, with the official openai SDK against `harmony serve`: token log-probabilities from
Whisper's own scores, one usage shape, and every OpenAI field either honoured or refused by name."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types.audio import Transcription, TranscriptionTextDeltaEvent, TranscriptionTextDoneEvent

from tests.speech import SENTENCES, normalize, speech_with_pauses, wav_bytes, wer

TEXTS = SENTENCES[:2]


@pytest.fixture(scope="module")
def speech():
    audio, rate = speech_with_pauses(TEXTS, pause_s=0.8)
    return wav_bytes(audio, rate)


def _check_logprobs(logprobs, text: str) -> None:
    """One item per token, each <= 0, the bytes each token's text, and the tokens joining to ``text``."""
    assert logprobs, "no logprobs"
    for item in logprobs:
        assert item.logprob is not None and item.logprob <= 0.0
        assert bytes(int(b) for b in item.bytes).decode("utf-8", errors="replace") == item.token
    joined = b"".join(bytes(int(b) for b in item.bytes) for item in logprobs).decode("utf-8")
    assert joined.split() == text.split(), (joined, text)


def test_include_logprobs(client, speech):
    result = client.audio.transcriptions.create(model="whisper-1", file=("s.wav", speech), include=["logprobs"])
    Transcription.model_validate(result.model_dump(exclude_unset=True), strict=True)
    assert wer(" ".join(TEXTS), result.text) <= 0.1, result.text
    _check_logprobs(result.logprobs, result.text)
    assert len(result.logprobs) >= len(result.text.split())  # at least a token a word
    assert any(item.logprob < 0.0 for item in result.logprobs)


def test_no_logprobs_unless_asked_and_one_usage_shape(client, speech):
    result = client.audio.transcriptions.create(model="whisper-1", file=("s.wav", speech))
    assert result.logprobs is None and "logprobs" not in result.model_dump(exclude_unset=True)
    events = list(client.audio.transcriptions.create(model="whisper-1", file=("s.wav", speech), stream=True))
    done = events[-1]
    assert isinstance(done, TranscriptionTextDoneEvent) and done.logprobs is None
    assert all(e.logprobs is None for e in events if isinstance(e, TranscriptionTextDeltaEvent))
    assert result.usage.type == done.usage.type == "tokens"  # the same shape, streamed or not
    assert result.usage.input_tokens == done.usage.input_tokens and result.usage.total_tokens > 0


def test_streamed_logprobs(client, speech):
    events = list(client.audio.transcriptions.create(model="whisper-1", file=("s.wav", speech), stream=True,
                                                     include=["logprobs"]))
    deltas = [e for e in events if isinstance(e, TranscriptionTextDeltaEvent)]
    done = events[-1]
    assert isinstance(done, TranscriptionTextDoneEvent) and deltas
    for delta in deltas:  # each delta carries its own tokens
        _check_logprobs(delta.logprobs, delta.delta)
    _check_logprobs(done.logprobs, done.text)
    assert [d.model_dump() for e in deltas for d in e.logprobs] == [d.model_dump() for d in done.logprobs]


@pytest.mark.parametrize("response_format", ["text", "verbose_json", "srt"])
def test_logprobs_only_with_json(client, speech, response_format):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=("s.wav", speech), include=["logprobs"],
                                           response_format=response_format)
    assert caught.value.body["param"] == "include"


@pytest.mark.parametrize("fields", [{"known_speaker_names": ["agent"]},
                                    {"known_speaker_references": ["data:audio/wav;base64,AAAA"]}])
def test_diarize_fields_refused_for_whisper(client, speech, fields):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=("s.wav", speech), **fields)
    assert caught.value.body["param"] == next(iter(fields))
    assert caught.value.body["code"] == "unsupported_parameter"


def test_unknown_field_refused_by_name(harmony, speech):
    response = httpx.post(harmony.url + "/v1/audio/transcriptions", timeout=120, files={"file": ("s.wav", speech)},
                          data={"model": "whisper-1", "temprature": "0.2"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "temprature"
    assert response.json()["error"]["code"] == "unknown_parameter"


def test_translation_refuses_transcription_only_fields(client, speech):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.translations.create(model="whisper-1", file=("s.wav", speech),
                                         extra_body={"include": ["logprobs"]})
    assert caught.value.body["param"] == "include"


def test_chunking_strategy_auto_is_vad_chunking(client, speech):
    result = client.audio.transcriptions.create(model="whisper-1", file=("s.wav", speech), chunking_strategy="auto")
    assert wer(" ".join(TEXTS), result.text) <= 0.1, result.text
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=("s.wav", speech),
                                           chunking_strategy={"type": "server_vad", "threshold": 0.7})
    assert caught.value.body["param"] == "chunking_strategy.threshold"


def test_keywords_and_languages(client, speech):
    result = client.audio.transcriptions.create(model="whisper-base", file=("s.wav", speech),
                                                keywords=["Stella", "fox"], languages=["en", "de"])
    assert wer(" ".join(TEXTS), result.text) <= 0.1, result.text
    with pytest.raises(openai.BadRequestError) as caught:  # a language the model does not know, named
        client.audio.transcriptions.create(model="whisper-tiny.en", file=("s.wav", speech), languages=["en", "fr"])
    assert caught.value.body["param"] == "languages"


def test_languages_restrict_detection(harmony, speech):
    """English audio with only German and French allowed: detection must pick one of those."""
    response = httpx.post(harmony.url + "/v1/audio/transcriptions", timeout=120, files={"file": ("s.wav", speech)},
                          data={"model": "whisper-base", "response_format": "verbose_json",
                                "languages[]": ["de", "fr"]})
    assert response.status_code == 200, response.text
    assert response.json()["language"] in {"german", "french"}


def test_speech_refuses_instructions_and_unknown_fields(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hello there.", instructions="Speak softly.")
    assert caught.value.body["param"] == "instructions"
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hello there.", extra_body={"volume": 2})
    assert caught.value.body["param"] == "volume" and caught.value.body["code"] == "unknown_parameter"


def test_normalized_text_of_logprobs_matches(client, speech):
    result = client.audio.transcriptions.create(model="whisper-tiny.en", file=("s.wav", speech), language="en",
                                                include=["logprobs"])
    joined = "".join(item.token for item in result.logprobs)
    assert normalize(joined) == normalize(result.text)
    assert json.loads(result.model_dump_json())["logprobs"]
