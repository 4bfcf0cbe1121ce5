"""The official openai SDK against `harmony serve`: what a user of OpenAI's API would do."""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest

from tests.speech import (
    GERMAN,
    GERMAN_IN_ENGLISH,
    SENTENCES,
    espeak,
    normalize,
    speech_with_pauses,
    synthesize,
    wav_bytes,
    wer,
)

TEXTS = SENTENCES[:3]


@pytest.fixture(scope="module")
def speech():
    audio, rate = speech_with_pauses(TEXTS, pause_s=0.8)
    return wav_bytes(audio, rate), len(audio) / rate


def test_transcription_returns_the_words(client, speech):
    data, _ = speech
    result = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", data))
    assert wer(" ".join(TEXTS), result.text) <= 0.1, result.text


@pytest.mark.parametrize("model", ["whisper-base", "whisper-tiny.en"])
def test_each_served_model_transcribes(client, speech, model):
    result = client.audio.transcriptions.create(model=model, file=("speech.wav", speech[0]), language="en")
    assert wer(" ".join(TEXTS), result.text) <= 0.1, result.text


def test_text_format(client, speech):
    text = client.audio.transcriptions.create(model="whisper-1", file=("s.wav", speech[0]), response_format="text")
    assert isinstance(text, str) and wer(" ".join(TEXTS), text) <= 0.1


def _cues(body: str, separator: str) -> list[tuple[float, float, str]]:
    pattern = re.compile(rf"(\d\d):(\d\d):(\d\d){separator}(\d\d\d) --> (\d\d):(\d\d):(\d\d){separator}(\d\d\d)\n(.+)")
    cues = []
    for m in pattern.finditer(body):
        g = [int(x) for x in m.groups()[:8]]
        cues.append((g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000, g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000,
                     m.group(9)))
    return cues


@pytest.mark.parametrize("fmt,separator", [("srt", ","), ("vtt", r"\.")])
def test_subtitle_formats(client, speech, fmt, separator):
    data, duration = speech
    body = client.audio.transcriptions.create(model="whisper-1", file=("s.wav", data), response_format=fmt)
    if fmt == "vtt":
        assert body.startswith("WEBVTT")
    else:
        assert body.startswith("1\n")
    cues = _cues(body, separator)
    assert len(cues) >= 2
    assert all(start < end <= duration + 0.5 for start, end, _ in cues)
    assert wer(" ".join(TEXTS), " ".join(text for _, _, text in cues)) <= 0.1


def test_verbose_json_with_word_and_segment_timestamps(client, speech):
    data, duration = speech
    result = client.audio.transcriptions.create(model="whisper-1", file=("s.wav", data),
                                                response_format="verbose_json",
                                                timestamp_granularities=["word", "segment"])
    assert result.language == "english"
    assert abs(result.duration - duration) < 0.1
    assert len(result.segments) >= 2 and result.segments[0].start < 1.0
    assert wer(" ".join(TEXTS), " ".join(w.word for w in result.words)) <= 0.1
    assert result.words[0].word.lower() == "the" and result.words[0].start < 1.0
    assert all(a.start <= b.start for a, b in zip(result.words, result.words[1:]))


def test_json_format_is_the_default(client, speech):
    result = client.audio.transcriptions.create(model="whisper-1", file=("s.wav", speech[0]), response_format="json")
    assert wer(" ".join(TEXTS), result.text) <= 0.1


def test_streaming_sends_deltas_then_done(client, speech):
    events = list(client.audio.transcriptions.create(model="whisper-1", file=("s.wav", speech[0]), stream=True))
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    done = [e for e in events if e.type == "transcript.text.done"]
    assert len(deltas) >= 2 and len(done) == 1 and events[-1].type == "transcript.text.done"
    assert "".join(deltas).strip() == done[0].text
    assert wer(" ".join(TEXTS), done[0].text) <= 0.1
    usage = done[0].usage  # the SDK types it as token usage
    assert usage.type == "tokens" and usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens >= 50 * 10 and usage.output_tokens > 10


@pytest.mark.parametrize("model", ["gpt-4o-transcribe", "gpt-4o-mini-transcribe"])
def test_openai_transcribe_model_names_are_served(client, speech, model):
    result = client.audio.transcriptions.create(model=model, file=("speech.wav", speech[0]))
    assert wer(" ".join(TEXTS), result.text) <= 0.1, result.text


def test_streamed_errors_before_the_first_event_keep_their_status(client, speech):
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(model="whisper-1", file=("s.mp3", b"\x00\x01 not audio" * 100),
                                           stream=True)
    assert err.value.body["code"] == "invalid_audio" and err.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(model="whisper-tiny.en", file=("s.wav", speech[0]), language="de",
                                           stream=True)
    assert err.value.body["param"] == "language"


def test_translation_to_english(client):
    audio, rate = espeak(GERMAN, "de")
    result = client.audio.translations.create(model="whisper-1", file=("de.wav", wav_bytes(audio, rate)))
    words = set(normalize(result.text))
    assert len(GERMAN_IN_ENGLISH & words) >= 3, result.text
    verbose = client.audio.translations.create(model="whisper-1", file=("de.wav", wav_bytes(audio, rate)),
                                               response_format="verbose_json")
    assert verbose.language == "english"


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt", "verbose_json"])
def test_translation_formats(client, fmt):
    audio, rate = synthesize(SENTENCES[0])
    body = client.audio.translations.create(model="whisper-1", file=("en.wav", wav_bytes(audio, rate)),
                                            response_format=fmt)
    text = body if isinstance(body, str) else body.text
    assert "fox" in text.lower()


def test_models_list_and_get(client):
    ids = {m.id for m in client.models.list()}
    assert {"whisper-1", "whisper-base", "whisper-tiny.en"} <= ids
    assert client.models.retrieve("whisper-1").id == "whisper-1"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_unknown_model_is_404_model_not_found(client, speech):
    with pytest.raises(openai.NotFoundError) as err:
        client.audio.transcriptions.create(model="whisper-9", file=("s.wav", speech[0]))
    assert err.value.body["code"] == "model_not_found"


def test_undecodable_audio_is_400_invalid_audio(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(model="whisper-1", file=("s.mp3", b"\x00\x01 not audio" * 100))
    assert err.value.body["code"] == "invalid_audio"


def test_bad_fields_are_400_naming_the_param(client, speech):
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(model="whisper-1", file=("s.wav", speech[0]), response_format="xml")
    assert err.value.body["param"] == "response_format"
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(model="whisper-1", file=("s.wav", speech[0]), response_format="json",
                                           timestamp_granularities=["word"])
    assert err.value.body["param"] == "timestamp_granularities"


def test_upload_over_25_mb_is_413_before_the_body_is_read(harmony):
    body = b"0" * (26 * 1024 * 1024)
    response = httpx.post(harmony.url + "/v1/audio/transcriptions", content=body, timeout=30,
                          headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "file_too_large"


def test_health_readiness_and_metrics(harmony):
    assert httpx.get(harmony.url + "/healthz").status_code == 200
    ready = httpx.get(harmony.url + "/readyz").json()
    assert ready["status"] == "ready"
    metrics = httpx.get(harmony.url + "/metrics").text
    assert "harmony_requests_total" in metrics


def test_sse_wire_format(harmony, speech):
    with httpx.stream("POST", harmony.url + "/v1/audio/transcriptions", timeout=120,
                      files={"file": ("s.wav", speech[0])}, data={"model": "whisper-1", "stream": "true"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1]["type"] == "transcript.text.done"
