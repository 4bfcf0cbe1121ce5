"""Text-to-speech with the official openai SDK against `harmony serve`: formats, words, speed, streaming, errors."""

from __future__ import annotations

import base64
import io
import json
import time

import httpx
import numpy as np
import openai
import pytest
import soundfile

from services.core.audio import decode_audio
from tests.speech import GERMAN, GERMAN_WORDS, SENTENCES, cer, normalize, wer

TEXT = " ".join(SENTENCES[:2])


def speak(client, **kwargs) -> bytes:
    return client.audio.speech.create(**{"model": "tts-1", "voice": "alloy", "input": TEXT, **kwargs}).content


def transcribe(client, audio: bytes, language: str | None = None) -> str:
    extra = {"language": language} if language else {}
    return client.audio.transcriptions.create(model="whisper-1", file=("speech.bin", audio), **extra).text


@pytest.fixture(scope="module")
def reference_seconds(client) -> float:
    wav = speak(client, response_format="wav")
    return len(decode_audio(wav, 22050)) / 22050


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav"])
def test_every_format_decodes_with_the_expected_duration_and_words(client, reference_seconds, fmt):
    audio = speak(client, response_format=fmt)
    seconds = len(decode_audio(audio, 16000)) / 16000
    assert abs(seconds - reference_seconds) < 0.2 * reference_seconds  # VITS durations vary a little per run
    assert wer(TEXT, transcribe(client, audio)) <= 0.15


@pytest.mark.parametrize("fmt,rate", [("wav", 22050), ("flac", 22050), ("mp3", 22050), ("opus", 48000)])
def test_native_sample_rate_in_the_file(client, fmt, rate):
    import av

    audio = speak(client, response_format=fmt, input=SENTENCES[0])
    with av.open(io.BytesIO(audio)) as container:
        assert container.streams.audio[0].rate == rate  # Ogg Opus always decodes at 48 kHz


def test_pcm_is_raw_16_bit_mono_at_openai_24_khz(client):
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input=SENTENCES[0],
                                                            response_format="pcm") as response:
        assert response.headers["content-type"] == "audio/pcm"
        rate = int(response.headers["x-sample-rate"])
        raw = response.read()
    assert rate == 24000 and len(raw) % 2 == 0  # OpenAI's pcm rate, whatever the voice's
    samples = np.frombuffer(raw, "<i2").astype(np.float32) / 32768
    assert 1.5 < len(samples) / rate < 6.0
    wav = io.BytesIO()
    soundfile.write(wav, samples, rate, format="WAV")
    assert wer(SENTENCES[0], transcribe(client, wav.getvalue())) <= 0.2


def test_sample_rate_extension_resamples(client):
    audio = client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCES[0], response_format="wav",
                                       extra_body={"sample_rate": 16000}).content
    info = soundfile.info(io.BytesIO(audio))
    assert info.samplerate == 16000


def test_speed_two_roughly_halves_the_duration(client, reference_seconds):
    fast = speak(client, response_format="wav", speed=2.0)
    ratio = (len(decode_audio(fast, 22050)) / 22050) / reference_seconds
    assert 0.4 < ratio < 0.7
    assert wer(TEXT, transcribe(client, fast)) <= 0.3


def test_named_voice_and_model(client):
    audio = client.audio.speech.create(model="piper-en-joe", voice="joe", input=SENTENCES[3]).content
    assert wer(SENTENCES[3], transcribe(client, audio)) <= 0.2


def test_german_routes_to_espeak_and_is_heard_in_german(client):
    text = GERMAN  # speech Whisper base hears reliably from espeak-ng
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=text, response_format="wav",
            extra_body={"language": "de"}) as response:
        assert response.headers["x-harmony-model"] == "espeak-ng"
        assert response.headers["x-harmony-voice"] == "espeak-de"
        audio = response.read()
    heard = set(normalize(transcribe(client, audio, "de")))
    assert len(GERMAN_WORDS & heard) >= 4, heard


@pytest.mark.parametrize("language,voice", [("es", "espeak-es"), ("fr", "espeak-fr"), ("ru", "espeak-ru"),
                                            ("zh", "espeak-cmn"), ("hi", "espeak-hi"), ("sw", "espeak-sw")])
def test_any_espeak_language_gets_speech(client, language, voice):
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input="1 2 3 4 5 6 7 8 9 10", response_format="flac",
            extra_body={"language": language}) as response:
        assert response.headers["x-harmony-voice"] == voice
        audio = response.read()
    samples = decode_audio(audio, 16000)
    assert len(samples) / 16000 > 1.0 and np.sqrt(np.mean(samples ** 2)) > 0.01


def test_voices_are_listed_with_languages_model_and_rate(harmony):
    voices = httpx.get(harmony.url + "/v1/audio/voices").json()["data"]
    by_id = {v["id"]: v for v in voices}
    assert by_id["joe"]["model"] == "piper-en-joe" and by_id["joe"]["sample_rate"] == 22050
    assert by_id["joe"]["languages"] == ["en"]
    assert "de" in by_id["espeak-de"]["languages"]
    assert len(voices) > 80


def test_first_streamed_chunk_arrives_well_before_the_whole_file(harmony):
    text = " ".join(SENTENCES * 2)
    started = time.perf_counter()
    with httpx.stream("POST", harmony.url + "/v1/audio/speech", timeout=120,
                      json={"model": "tts-1", "voice": "alloy", "input": text, "response_format": "mp3"}) as r:
        assert r.status_code == 200
        first = None
        total = 0
        for chunk in r.iter_raw():
            if chunk and first is None:
                first = time.perf_counter() - started
            total += len(chunk)
    whole = time.perf_counter() - started
    assert first is not None and total > 10_000
    assert first < 0.5 * whole, (first, whole)


def test_sse_stream_format(harmony):
    with httpx.stream("POST", harmony.url + "/v1/audio/speech", timeout=120,
                      json={"model": "tts-1", "voice": "alloy", "input": TEXT, "response_format": "wav",
                            "stream_format": "sse"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done"
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert len(deltas) >= 2
    audio = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert len(decode_audio(audio, 16000)) / 16000 > 3.0


def test_instructions_are_refused_by_name(client):
    """No backend here follows free-form instructions (OpenAI's tts-1 refuses them too): a 400 naming the field,
    never accepted and ignored; an empty one asks for nothing."""
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCES[0], instructions="Speak cheerfully.")
    assert err.value.body["param"] == "instructions" and err.value.body["code"] == "unsupported_parameter"
    audio = client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCES[0], instructions="").content
    assert wer(SENTENCES[0], transcribe(client, audio)) <= 0.2


def test_unknown_voice_is_400_naming_the_valid_ones(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.speech.create(model="tts-1", voice="darth", input="Hello.")
    assert err.value.body["param"] == "voice" and "joe" in err.value.body["message"]
    assert "alloy" in err.value.body["message"]


def test_empty_and_too_long_input_are_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.speech.create(model="tts-1", voice="alloy", input="   ")
    assert err.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.speech.create(model="tts-1", voice="alloy", input="a" * 4097)
    assert err.value.body["param"] == "input" and "4096" in err.value.body["message"]


def test_bad_speed_format_and_model_are_4xx(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", speed=5.0)
    assert err.value.body["param"] == "speed"
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", response_format="ogg")
    assert err.value.body["param"] == "response_format"
    with pytest.raises(openai.NotFoundError):
        client.audio.speech.create(model="tts-9", voice="alloy", input="Hi.")
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.speech.create(model="whisper-1", voice="alloy", input="Hi.")
    assert err.value.body["code"] == "model_task_mismatch"


def test_voice_of_another_language_is_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.speech.create(model="tts-1", voice="joe", input="Hallo.", extra_body={"language": "de"})
    assert err.value.body["param"] == "language"


def test_japanese_routes_to_kokoro_and_is_heard_in_japanese(client):
    text = "今日はとても良い天気ですね。"
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=text, response_format="wav",
            extra_body={"language": "ja"}) as response:
        assert response.headers["x-harmony-model"] == "kokoro-ja"
        assert response.headers["x-sample-rate"] == "24000"
        audio = response.read()
    heard = transcribe(client, audio, "ja")
    assert cer(text, heard) <= 0.35, heard


def test_named_kokoro_voice(client):
    audio = client.audio.speech.create(model="kokoro-ja", voice="kokoro-jm_kumo", input="おはようございます。",
                                       response_format="flac").content
    assert 0.5 < len(decode_audio(audio, 16000)) / 16000 < 5.0


@pytest.mark.parametrize("model", ["gpt-4o-mini-tts-2025-03-20", "tts-1-1106", "tts-1-hd-1106"])
def test_dated_snapshots_of_openai_names_are_served(client, model):
    audio = client.audio.speech.create(model=model, voice="alloy", input=SENTENCES[0], response_format="wav").content
    assert wer(SENTENCES[0], transcribe(client, audio)) <= 0.2
    assert client.models.retrieve(model).id == model


def test_nul_in_input_is_spoken_around_not_a_500(client):
    audio = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello\x00 world.",
                                       response_format="wav").content
    assert len(decode_audio(audio, 16000)) / 16000 > 0.5


def test_deterministic_errors_are_not_retried(harmony):
    response = httpx.post(harmony.url + "/v1/audio/speech", json={"model": "tts-9", "voice": "alloy", "input": "x"})
    assert response.status_code == 404 and response.headers["x-should-retry"] == "false"
