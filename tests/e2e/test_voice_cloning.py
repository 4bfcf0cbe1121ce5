"""VAD, speaker embeddings, voice conversion, registered voices and the voice-cloning pipeline, end to end."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest
import yaml

from services.core.audio import decode_audio
from services.core.http.service_url import sync_client
from tests.harmony_process import HarmonyProcess
from tests.speech import SENTENCES, silence, synthesize, wav_bytes, wer

JAPANESE_REFERENCE = ("今日はとても良い天気ですね。私は毎朝、駅の近くの小さな店でコーヒーを買います。"
                      "週末には友達と一緒に公園を散歩するのが好きです。")
TEXT = SENTENCES[0]


def tts(client, voice: str, text: str, model: str = "kokoro-ja", fmt: str = "wav", **extra) -> bytes:
    return client.audio.speech.create(model=model, voice=voice, input=text, response_format=fmt,
                                      extra_body=extra or None).content


def embed(harmony, audio: bytes) -> np.ndarray:
    response = httpx.post(harmony.url + "/v1/audio/embeddings", files={"file": ("a.wav", audio)}, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["data"][0]["object"] == "embedding"
    vector = np.array(body["data"][0]["embedding"])
    assert vector.shape == (256,) and abs(np.linalg.norm(vector) - 1) < 1e-3
    return vector


def transcribe(client, audio: bytes) -> str:
    return client.audio.transcriptions.create(model="whisper-1", file=("a.bin", audio), language="en").text


@pytest.fixture(scope="module")
def target(client):
    """A target voice unlike the default one: Kokoro's jf_alpha (female, Japanese)."""
    return tts(client, "kokoro-jf_alpha", JAPANESE_REFERENCE)


@pytest.fixture(scope="module")
def voice(harmony, target):
    response = httpx.post(harmony.url + "/v1/audio/voices", data={"name": "alpha"},
                          files=[("file", ("alpha.wav", target, "audio/wav"))], timeout=180)
    assert response.status_code == 200, response.text
    return response.json()


def test_vad_finds_speech_within_a_third_of_a_second(harmony):
    first, rate = synthesize(SENTENCES[0])
    second, _ = synthesize(SENTENCES[3])
    audio = np.concatenate([silence(1.0, rate), first, silence(1.5, rate), second, silence(1.0, rate)])
    response = httpx.post(harmony.url + "/v1/audio/vad", files={"file": ("a.wav", wav_bytes(audio, rate))},
                          data={"min_silence_duration_ms": "300"}, timeout=60)
    assert response.status_code == 200, response.text
    segments = response.json()["segments"]
    starts = [1.0, 1.0 + len(first) / rate + 1.5]
    ends = [1.0 + len(first) / rate, starts[1] + len(second) / rate]
    assert len(segments) == 2, segments
    for segment, start, end in zip(segments, starts, ends):
        assert abs(segment["start"] - start) < 0.3 and abs(segment["end"] - end) < 0.3, (segment, start, end)


def test_embeddings_of_one_voice_are_closer_than_of_different_voices(harmony, client, target):
    joe_a = embed(harmony, tts(client, "joe", SENTENCES[0], model="piper-en-joe"))
    joe_b = embed(harmony, tts(client, "joe", SENTENCES[3], model="piper-en-joe"))
    alpha = embed(harmony, target)
    assert joe_a @ joe_b > 0.85
    assert joe_a @ joe_b > joe_a @ alpha + 0.1


def test_registered_voice_is_listed_and_shown(harmony, voice):
    assert voice["id"].startswith("voice_") and voice["name"] == "alpha"
    assert voice["speech_seconds"] > 3 and len(voice["embedding"]) == 256
    shown = httpx.get(harmony.url + f"/v1/audio/voices/{voice['id']}").json()
    assert shown["id"] == voice["id"] and shown["model"] == "voice-clone"
    listed = {v["id"] for v in httpx.get(harmony.url + "/v1/audio/voices").json()["data"]}
    assert voice["id"] in listed and "joe" in listed


def test_speech_in_a_registered_voice_is_closer_to_it_and_intelligible(harmony, client, voice, target):
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice=voice["id"], input=TEXT,
                                                            response_format="wav") as response:
        assert response.headers["x-harmony-pipeline"] == "voice-clone"
        assert response.headers["x-harmony-steps-skipped"] == "vad,embed"
        assert response.headers["x-harmony-steps-run"] == "tts,vc"
        cloned = response.read()
    plain = tts(client, "alloy", TEXT, model="tts-1")
    reference = embed(harmony, target)
    assert embed(harmony, cloned) @ reference > embed(harmony, plain) @ reference + 0.03
    assert wer(TEXT, transcribe(client, cloned)) <= 0.25
    seconds = len(decode_audio(cloned, 16000)) / 16000
    assert 1.5 < seconds < 6


@pytest.mark.parametrize("fmt", ["mp3", "opus", "flac"])
def test_cloned_speech_in_other_formats(client, voice, fmt):
    audio = client.audio.speech.create(model="tts-1", voice=voice["id"], input=SENTENCES[3],
                                       response_format=fmt).content
    assert len(decode_audio(audio, 16000)) / 16000 > 1.5


def test_cloning_from_reference_audio_in_the_request(harmony, client, target):
    body = {"model": "tts-1", "voice": "alloy", "input": TEXT, "response_format": "wav",
            "reference_audio": base64.b64encode(target).decode()}
    response = httpx.post(harmony.url + "/v1/audio/speech", json=body, timeout=180)
    assert response.status_code == 200, response.text
    assert response.headers["x-harmony-steps-run"] == "vad,embed,tts,vc"
    assert wer(TEXT, transcribe(client, response.content)) <= 0.25


def test_conversion_endpoint_with_voice_and_with_reference(harmony, client, voice, target):
    source = tts(client, "joe", SENTENCES[3], model="piper-en-joe")
    by_voice = httpx.post(harmony.url + "/v1/audio/conversions", data={"voice": voice["id"]},
                          files={"file": ("s.wav", source)}, timeout=120)
    assert by_voice.status_code == 200, by_voice.text
    assert by_voice.headers["x-harmony-pipeline"] == "voice-conversion"
    assert by_voice.headers["x-harmony-steps-run"] == "vc"  # a registered voice: no VAD
    by_reference = httpx.post(harmony.url + "/v1/audio/conversions", data={"response_format": "flac"},
                              files={"file": ("s.wav", source), "reference": ("r.wav", target)}, timeout=120)
    assert by_reference.status_code == 200, by_reference.text
    assert by_reference.headers["x-harmony-steps-run"] == "vad,vc"
    reference = embed(harmony, target)
    before = embed(harmony, source) @ reference
    for converted in (by_voice.content, by_reference.content):
        assert embed(harmony, converted) @ reference > before
        assert wer(SENTENCES[3], transcribe(client, converted)) <= 0.25


@pytest.mark.parametrize("kind", ["silence", "noise", "too short"])
def test_bad_reference_is_a_clear_400(harmony, kind):
    rate = 22050
    if kind == "silence":
        audio = silence(4.0, rate)
    elif kind == "noise":
        audio = (np.random.default_rng(0).standard_normal(4 * rate) * 0.3).astype(np.float32)
    else:
        word, rate = synthesize("Hi.")
        audio = np.concatenate([silence(1.0, rate), word[: int(0.6 * rate)], silence(1.0, rate)])
    response = httpx.post(harmony.url + "/v1/audio/voices", data={"name": kind},
                          files={"file": ("ref.wav", wav_bytes(audio, rate))}, timeout=120)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "bad_reference"
    assert "step 'embed'" in error["message"] and "speech" in error["message"]


def test_failed_step_is_named_for_reference_audio_in_speech(harmony):
    body = {"model": "tts-1", "voice": "alloy", "input": "Hello.",
            "reference_audio": base64.b64encode(wav_bytes(silence(3.0, 16000), 16000)).decode()}
    response = httpx.post(harmony.url + "/v1/audio/speech", json=body, timeout=60)
    assert response.status_code == 400
    assert "voice-clone: step 'embed'" in response.json()["error"]["message"]


def test_unknown_registered_voice_is_404_or_400(harmony, client):
    assert httpx.get(harmony.url + "/v1/audio/voices/voice_0123456789abcdef").status_code == 404
    with pytest.raises(openai.APIStatusError) as err:
        client.audio.speech.create(model="tts-1", voice="voice_0123456789abcdef", input="Hello.")
    assert err.value.status_code == 404


def test_voice_survives_a_restart_and_can_be_deleted(target, tmp_path):
    config = yaml.safe_load(open("services/defaults/serve.yaml"))
    keep = {"silero-vad", "resemblyzer", "world-vc", "piper-en-joe"}
    config["models"] = [m for m in config["models"] if m["name"] in keep]
    config["routes"] = [r for r in config["routes"] if all(step["model"] in keep for step in r["steps"])]
    config["data_dir"] = str(tmp_path / "data")  # the database and the voices' speech of this test alone
    path = tmp_path / "clone.yaml"
    path.write_text(yaml.safe_dump(config))

    first = HarmonyProcess(config=str(path)).start()
    try:
        voice = httpx.post(first.url + "/v1/audio/voices", data={"name": "alpha"},
                           files={"file": ("a.wav", target)}, timeout=180).json()
    finally:
        assert first.stop() == 0
    second = HarmonyProcess(config=str(path)).start()
    try:
        shown = httpx.get(second.url + f"/v1/audio/voices/{voice['id']}")
        assert shown.status_code == 200 and shown.json()["name"] == "alpha"
        speech = httpx.post(second.url + "/v1/audio/speech", timeout=120,
                            json={"model": "tts-1", "voice": voice["id"], "input": "Good morning."})
        assert speech.status_code == 200 and len(speech.content) > 1000
        deleted = httpx.delete(second.url + f"/v1/audio/voices/{voice['id']}")
        assert deleted.status_code == 200 and deleted.json()["deleted"] is True
        assert httpx.get(second.url + f"/v1/audio/voices/{voice['id']}").status_code == 404
    finally:
        assert second.stop() == 0


def audio_seconds(url: str, model: str) -> float:
    with sync_client(url) as service:
        text = service.get("/metrics").text
    for line in text.splitlines():
        if line.startswith("harmony_audio_seconds_total{") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_reference_recording_crosses_the_network_once(harmony):
    """Only the VAD service hears the whole recording; the speaker encoder gets the speech VAD cut out of it."""
    speech, rate = synthesize(" ".join(SENTENCES[:3]))
    reference = np.concatenate([silence(3.0, rate), speech, silence(3.0, rate)])
    vad, voice = harmony.service_url("vad"), harmony.service_url("vc")
    heard_before, embedded_before = audio_seconds(vad, "silero-vad"), audio_seconds(voice, "resemblyzer")
    body = {"model": "tts-1", "voice": "alloy", "input": "Hello there.", "response_format": "wav",
            "reference_audio": base64.b64encode(wav_bytes(reference, rate)).decode()}
    response = httpx.post(harmony.url + "/v1/audio/speech", json=body, timeout=180)
    assert response.status_code == 200, response.text
    heard = audio_seconds(vad, "silero-vad") - heard_before
    embedded = audio_seconds(voice, "resemblyzer") - embedded_before
    assert abs(heard - len(reference) / rate) < 0.05
    assert len(speech) / rate - 1.0 < embedded < len(speech) / rate + 0.5
